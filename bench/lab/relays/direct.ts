// No relay: the app connects straight to the server through the NAT, with the kernel's
// default keepalive (off). The baseline that shows what the NAT does to an idle connection.

import { targetAcross, type Relay } from './relay.ts'

export const direct: Relay = {
  name: 'direct',
  proxies: false,
  async unavailable() {
    return null
  },
  async start(ctx) {
    return {
      address: (await targetAcross(ctx)).target,
      async pids() { return [] },
      async stop() {}
    }
  }
}
