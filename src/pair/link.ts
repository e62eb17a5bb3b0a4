// A pair link: one authenticated TLS 1.3 connection between a near end and a far end, carrying
// the frames of many sessions (design and frame format: protocol.ts). This module knows sockets,
// authentication, framing and liveness; what the frames mean to sessions is its owner's business
// (LinkEvents). Three pieces:
// - PairLink: an established TLS socket; the near end sends its HELLO, the far end answers once
//   it verified, and nothing else is accepted before the peer's HELLO verifies; then it passes
//   frames on. It sends a heartbeat when it has sent nothing for the pair heartbeat, and is dead
//   when nothing came from its peer for 3 x that. When both ends can, the frames then leave TLS
//   for sealed records (records.ts) on the same connection; see PairLink's switch below.
// - PairLinkServer (far end): accepts links; a peer without the secret, or one that does not
//   speak TLS, is refused with one line (at most one a second per reason: refusals.ts).
// - LinkDialer (near end): keeps one link to the far end up, connecting again with backoff
//   whenever it fails or dies, each time from a new socket (a new source port, so a NAT that
//   lost its mapping makes a new one); one line per failed attempt.

import tls, { type TLSSocket } from 'node:tls'
import net, { type AddressInfo } from 'node:net'
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { formatEndpoint, formatPeer } from '../config/endpoint.ts'
import type { RefusalLog } from '../refusals.ts'
import { handleFd, stopReading } from '../node-internals.ts'
import { loadNative } from '../native.ts'
import type { PairKeys } from './secret.ts'
import type { Channel } from './channel.ts'
import { writeDirect } from './direct-write.ts'
import { FRAME, FrameReader, frameHeader, HEADER_BYTES, HELLO_BYTES, HELLO_FLAGS, LINK_QUEUE_BYTES, PROTOCOL_VERSION, ROLE, type FrameSink, type FrameType, type Role } from './protocol.ts'
import { IV_BYTES, KEY_BYTES, MAX_RECORD, MAX_RECORD_PIECES, RecordKeys, RecordReader, SealRing, sealRecord, type RecordSink } from './records.ts'

/** The TLS identity offered with the pre-shared key: one secret per pair, so a constant. */
const PSK_IDENTITY = 'ka-proxy-pair'
const EXPORTER_LABEL = 'EXPORTER-ka-proxy-pair-hello'
const RECORDS_LABEL = 'EXPORTER-ka-proxy-pair-records'
const NO_CONTEXT = Buffer.alloc(0)
const TLS_OPTIONS = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const

/** Reconnect backoff of the near end: from the first retry to the longest wait between two. */
const BACKOFF_FIRST_MS = 100
const BACKOFF_MAX_MS = 5000

/** Why a link ended, in its log line. */
export type LinkDownReason =
  | 'heartbeat_timeout'
  | 'protocol'
  | 'bad_hello'
  | 'closed'
  | 'error'
  | 'local'

/** Why a link could not be set up, in the near end's log line. */
export type LinkFailReason = 'bad_secret' | 'bad_hello' | 'handshake_failed' | 'handshake_timeout' | 'connect_failed'

export interface LinkOptions {
  keys: PairKeys
  /** Milliseconds without a frame sent after which a heartbeat goes; 3 x without one received: dead. */
  heartbeatMs: number
  logger: Logger
  /**
   * Socket options for every link's socket, once its handshake is done (TCP keepalive: the
   * link's own, under the heartbeats); a throw is logged, the link goes on.
   */
  tune?: (socket: net.Socket) => void
  /**
   * False: the link's frames stay in TLS (to test that path); else they move to sealed records
   * when both ends have the native helper (the socket's descriptor is taken back from TLS).
   */
  records?: boolean
  /** Records: bytes sealed under one key before the next (records.ts KEY_UPDATE_BYTES; tests make it small). */
  keyUpdateBytes?: number
}

/** What a link tells its owner. Frames come only once the peer is authenticated. */
export interface LinkEvents {
  onLinkUp(link: PairLink): void
  onLinkControl(link: PairLink, type: FrameType, channel: number, payload: Buffer): void
  /**
   * A piece of a DATA frame's payload (see FrameReader). With records it views a buffer the next
   * record reuses: a receiver that keeps it past this call says so (PairLink.keepPiece).
   */
  onLinkData(link: PairLink, channel: number, piece: Buffer): void
  /** The link is gone (not told for a link its owner closed). Once, after onLinkUp if it came. */
  onLinkDown(link: PairLink, reason: LinkDownReason): void
}

/** The proof a side sends: HMAC over this link's exported keying material, the sender's role and flags. */
function helloProof(socket: TLSSocket, keys: PairKeys, role: Role, flags: number): Buffer {
  const material = socket.exportKeyingMaterial(32, EXPORTER_LABEL, NO_CONTEXT)
  return createHmac('sha256', keys.hello).update(material).update(Buffer.of(ROLE[role], flags)).digest()
}

/** This process can take a socket back from TLS (a duplicate of its descriptor: the native helper). */
function canLeaveTls(): boolean {
  return loadNative().ok
}

/** What a link reads its records with, reused read after read (Node's `onread`): one buffer per link. */
const LINK_READ_BYTES = 256 * 1024

/**
 * A plain socket on a duplicate of `socket`'s descriptor; the TLS socket reads no more (what
 * arrives next is the plain socket's) and is to be destroyed after its last write: closing its
 * descriptor leaves the connection to the duplicate, with no FIN and no TLS alert. Its reads go
 * to `onRead` as views of one buffer, valid until it returns (no 'data' events).
 */
function leaveTls(socket: TLSSocket, onRead: (chunk: Buffer) => void): net.Socket {
  const native = loadNative()
  const fd = handleFd(socket)
  if (!native.ok || fd === undefined || !stopReading(socket)) throw new Error('the link\'s socket cannot leave TLS')
  const dup = native.binding.dupFd(fd)
  const buffer = Buffer.allocUnsafeSlow(LINK_READ_BYTES)
  const onread = {
    buffer,
    callback: (n: number): boolean => {
      onRead(buffer.subarray(0, n))
      return true
    },
  }
  try {
    // onread: Node's option of new net.Socket (documented there since 2024; older types have it on connect only).
    return new net.Socket({ fd: dup, readable: true, writable: true, onread } as net.SocketConstructorOpts)
  } catch (err) {
    native.binding.closeFd(dup)
    throw err
  }
}

export class PairLink implements FrameSink, RecordSink {
  readonly role: Role
  /** The peer's address, as host:port. */
  readonly peer: string
  /** switching: the far end answered for records, and waits for the near end's first. */
  state: 'hello' | 'switching' | 'up' | 'down' = 'hello'
  /** The socket frames go on: the TLS socket, or after the switch the plain one. */
  #socket: net.Socket
  /** The TLS socket until it is destroyed (at the switch, or with the link). */
  #tls: TLSSocket | undefined
  readonly #options: LinkOptions
  readonly #events: LinkEvents
  #frames: FrameReader
  readonly #timer: NodeJS.Timeout
  #lastSent = performance.now()
  #lastReceived = performance.now()
  #corked = false
  /** Records: the keys of what this end sends, and the frames of this turn of the event loop. */
  #sendKeys: RecordKeys | undefined
  /** Where records are sealed, held until written (records.ts). */
  readonly #ring = new SealRing()
  readonly #written = (): void => this.#ring.release()
  /** Records: what opens the peer's (`keepPiece` tells it a piece was kept); undefined while in TLS. */
  #records: RecordReader | undefined
  /** Records: the plain socket's descriptor (records are written to it directly: #write). */
  #fd: number | undefined
  #out: Buffer[] = []
  #outBytes = 0
  /** Channels with frames waiting, served one frame each in turn while the socket takes more (schedule). */
  readonly #turns: Channel[] = []
  readonly #startedAt = performance.now()

  /** The link's handlers on its socket (the TLS one, then the plain one), removed at the switch. */
  readonly #handlers = {
    data: (chunk: Buffer): void => this.#onRead(chunk),
    drain: (): void => this.#flush(),
    error: (err: NodeJS.ErrnoException): void => this.#down('error', err.code ?? err.message),
    close: (): void => this.#down('closed'),
  }

  /** `socket` has finished its TLS handshake (with the pre-shared key). */
  constructor(socket: TLSSocket, role: Role, options: LinkOptions, events: LinkEvents) {
    this.#socket = socket
    this.#tls = socket
    this.role = role
    this.#options = options
    this.#events = events
    this.peer = formatPeer(socket.remoteAddress, socket.remotePort)
    this.#frames = new FrameReader(this)
    socket.setNoDelay(true)
    try {
      options.tune?.(socket)
    } catch (err) {
      options.logger.warn({ peer: this.peer, err }, 'cannot set the pair link\'s socket options')
    }
    this.#listen(socket)
    // Checked four times per heartbeat: a heartbeat leaves within 1.25 of them, death is seen within 3.25.
    this.#timer = setInterval(linkOnTick, options.heartbeatMs / 4, this)
    if (role === 'near') this.#sendHello(options.records !== false && canLeaveTls() ? HELLO_FLAGS.records : 0)
  }

  #listen(socket: net.Socket, on = true): void {
    for (const [event, handler] of Object.entries(this.#handlers)) {
      if (on) socket.on(event, handler)
      else socket.off(event, handler)
    }
  }

  /** Written at once (not corked), in TLS; `written` once it left. */
  #sendHello(flags: number, written?: () => void): void {
    const hello = frameHeader(FRAME.HELLO, 0, HELLO_BYTES, HELLO_BYTES)
    hello[HEADER_BYTES] = PROTOCOL_VERSION
    hello[HEADER_BYTES + 1] = ROLE[this.role]
    hello[HEADER_BYTES + 2] = flags
    helloProof(this.#tls!, this.#options.keys, this.role, flags).copy(hello, HEADER_BYTES + 3)
    this.#tls!.write(hello, written)
    this.#lastSent = performance.now()
  }

  /** The socket the frames go on: the TLS socket, or the plain one once they left TLS. */
  get socket(): net.Socket {
    return this.#socket
  }

  /** Whether the frames travel in sealed records (records.ts), not in TLS. */
  get records(): boolean {
    return this.#sendKeys !== undefined
  }

  /** The local port (the near end's changes with every new link). */
  get localPort(): number | undefined {
    return this.#socket.localPort
  }

  /**
   * Queues a frame (and a DATA payload after its header). Frames of one turn of the event loop
   * leave together (corked): many small sessions' frames share TLS records and system calls.
   * What a link buffers is bounded by the sessions' credit (protocol.ts), not here.
   */
  send(frame: Buffer, data?: Buffer): void {
    if (this.state === 'down') return
    if (this.#sendKeys !== undefined) {
      this.#queue(frame, data)
      return
    }
    const socket = this.#socket
    if (!this.#corked) {
      this.#corked = true
      socket.cork()
      process.nextTick(linkUncork, this)
    }
    socket.write(frame)
    if (data !== undefined) socket.write(data)
    this.#lastSent = performance.now()
  }

  /**
   * `channel` has frames to send: they go in turn with every other channel's, one frame (at most
   * MAX_DATA) each, and only while the socket holds less than LINK_QUEUE_BYTES. So what waits in
   * front of a frame is that, one frame per busy channel and the kernel's unsent bytes (at most
   * LINK_NOTSENT_LOWAT), not every byte that bulk channels' credit lets them send: a bulk session
   * does not stall an interactive one.
   */
  schedule(channel: Channel): void {
    if (channel.scheduledOn !== this) {
      channel.scheduledOn = this
      this.#turns.push(channel)
    }
    this.#flush()
  }

  /**
   * Records: the frames of one turn of the event loop go in one record, sealed once the turn's
   * reads are all done (setImmediate: what every session's read made, as Node's TLS socket
   * batches its writes; a nextTick sealed one record per read, 1.5 link writes a round trip at
   * 32 connections where TLS made 0.3, and cost 60 % more CPU a round trip), or sooner at
   * MAX_RECORD bytes or MAX_RECORD_PIECES pieces; written in one system call.
   */
  #queue(frame: Buffer, data: Buffer | undefined): void {
    const length = frame.length + (data?.length ?? 0)
    if (this.#outBytes + length > MAX_RECORD || this.#out.length + 2 > MAX_RECORD_PIECES) this.#seal()
    this.#out.push(frame)
    if (data !== undefined) this.#out.push(data)
    if (this.#outBytes === 0 && !this.#corked) {
      this.#corked = true
      setImmediate(linkUncork, this)
    }
    this.#outBytes += length
    this.#lastSent = performance.now()
  }

  #seal(): void {
    // Switching (far end): nothing is written before the near end's first record says it left TLS.
    if (this.#outBytes === 0 || this.state !== 'up') return
    let record: Buffer
    try {
      record = sealRecord(this.#sendKeys!, this.#out, this.#outBytes, this.#ring)
    } catch (err) {
      // Not expected (what is sealed is checked here); the link ends, its sessions resume, nothing crashes.
      this.#down('error', `cannot seal a record: ${(err as Error).message}`)
      return
    }
    this.#out = []
    this.#outBytes = 0
    this.#write(record)
  }

  /**
   * A record onto the socket (writeDirect): its room in the ring is freed at once when the kernel
   * took it all (the ring frees in order, and the records before it left already), else once
   * Node's write of the rest completed.
   */
  #write(record: Buffer): void {
    const held = this.#ring.holds(record)
    if (writeDirect(this.#socket, this.#fd, record, held ? this.#written : undefined) === 'kernel' && held) this.#ring.release()
  }

  #flush(): void {
    const socket = this.#socket
    const turns = this.#turns
    // Past LINK_QUEUE_BYTES (above the socket's high-water mark) a write returned false: 'drain' calls again.
    while (turns.length > 0 && this.state !== 'down' && socket.writableLength + this.#outBytes < LINK_QUEUE_BYTES) {
      const channel = turns.shift()!
      const frame = channel.link === this ? channel.takeFrame() : undefined
      if (frame !== undefined && channel.hasFrames) {
        turns.push(channel)
      } else if (channel.scheduledOn === this) {
        channel.scheduledOn = undefined
      }
      if (frame !== undefined) this.send(frame[0], frame[1])
    }
  }

  uncork(): void {
    this.#corked = false
    if (this.#sendKeys === undefined) {
      this.#socket.uncork()
      return
    }
    this.#seal()
    // The kernel may have taken the record at once, and then no 'drain' comes: more turns now.
    if (this.#turns.length > 0 && !this.#socket.writableNeedDrain) this.#flush()
  }

  /** Closes the link from this side; no onLinkDown follows. */
  close(): void {
    this.#down('local')
  }

  /** The heartbeat check: a heartbeat when idle, death when the peer has been silent too long. */
  tick(): void {
    const now = performance.now()
    const hb = this.#options.heartbeatMs
    if (now - this.#lastReceived >= 3 * hb) {
      this.#down('heartbeat_timeout', `nothing from the peer for ${Math.round(now - this.#lastReceived)} ms`)
      return
    }
    if (this.state === 'up' && now - this.#lastSent >= hb) this.send(frameHeader(FRAME.HEARTBEAT, 0, 0))
  }

  #onRead(chunk: Buffer): void {
    this.#lastReceived = performance.now()
    // Records once the link left TLS (their plaintext goes to #frames), else frames straight from TLS.
    ;(this.#records ?? this.#frames).push(chunk)
  }

  /**
   * The receiver of the DATA piece being handed on (onLinkData) keeps it past the call (it waits
   * in a socket's queue): with records, the buffer it views is then not reused.
   */
  keepPiece(): void {
    this.#records?.keep()
  }

  onRecord(plain: Buffer): void {
    if (this.state === 'down') return
    if (this.state === 'switching') {
      // The near end's first record: it left TLS, so this end may write records too.
      this.#up()
      this.#seal()
    }
    this.#frames.push(plain)
  }

  onRecordError(detail: string): void {
    this.#down('protocol', detail)
  }

  onControl(type: FrameType, channel: number, payload: Buffer): void {
    if (this.state === 'down') return
    if (this.state === 'hello') {
      this.#onHello(type, payload)
      return
    }
    if (type === FRAME.HEARTBEAT) return
    if (type === FRAME.HELLO) {
      this.onProtocolError('a second HELLO')
      return
    }
    this.#events.onLinkControl(this, type, channel, payload)
  }

  onData(channel: number, piece: Buffer): void {
    if (this.state === 'down') return
    if (this.state !== 'up') {
      this.onProtocolError('DATA before HELLO')
      return
    }
    this.#events.onLinkData(this, channel, piece)
  }

  onProtocolError(detail: string): void {
    this.#down(this.state === 'hello' ? 'bad_hello' : 'protocol', detail)
  }

  /**
   * The peer's HELLO: the other role, and proof of the secret bound to this link. The far end
   * answers with its own; then, if both asked for records, the link leaves TLS (#leaveTls).
   */
  #onHello(type: FrameType, payload: Buffer): void {
    const peerRole: Role = this.role === 'near' ? 'far' : 'near'
    if (type !== FRAME.HELLO) {
      this.onProtocolError(`frame type ${type} before HELLO`)
      return
    }
    if (payload[0] !== PROTOCOL_VERSION) {
      this.onProtocolError(`the peer speaks pair protocol ${payload[0] ?? 'none'}, this end ${PROTOCOL_VERSION}: both ends need the same ka-proxy version`)
      return
    }
    const flags = payload[2]!
    if (payload.length !== HELLO_BYTES || payload[1] !== ROLE[peerRole] || (flags & ~HELLO_FLAGS.records) !== 0) {
      this.onProtocolError(`HELLO of ${payload.length} bytes, role ${payload[1]}, flags ${flags}`)
      return
    }
    const proof = helloProof(this.#tls!, this.#options.keys, peerRole, flags)
    if (!timingSafeEqual(proof, payload.subarray(3))) {
      this.onProtocolError('HELLO proof does not verify')
      return
    }
    const records = (flags & HELLO_FLAGS.records) !== 0
    if (this.role === 'far') {
      if (records && this.#options.records !== false && canLeaveTls()) {
        this.#leaveTls('switching')
      } else {
        this.#sendHello(0)
        this.#up()
      }
    } else if (records) {
      this.#leaveTls('up')
    } else {
      this.#up()
    }
  }

  /**
   * The switch from TLS to sealed records. TLS reads ahead, so neither end may write a record
   * while the other's TLS could still be reading: the near end's HELLO is the last thing it
   * writes in TLS, and the far end reads no more TLS once it verified it; the far end's HELLO is
   * the last thing it writes in TLS, and the near end reads no more TLS once it verified that.
   * The near end then writes its first record, and the far end writes none before it read it
   * (state 'switching'). Each end's socket becomes a plain one on a duplicate of its descriptor
   * (its options, keepalive included, are the socket's: they stay).
   */
  #leaveTls(state: 'switching' | 'up'): void {
    const tls = this.#tls!
    let plain: net.Socket
    try {
      plain = leaveTls(tls, this.#handlers.data)
    } catch (err) {
      this.#down('error', `cannot leave TLS: ${(err as Error).message}`)
      return
    }
    const material = tls.exportKeyingMaterial(2 * (KEY_BYTES + IV_BYTES), RECORDS_LABEL, NO_CONTEXT)
    const keys = (at: number, seal: boolean): RecordKeys =>
      new RecordKeys(material.subarray(at, at + KEY_BYTES), material.subarray(at + KEY_BYTES, at + KEY_BYTES + IV_BYTES), seal, this.#options.keyUpdateBytes)
    const near = this.role === 'near'
    const nearToFar = keys(0, near)
    const farToNear = keys(KEY_BYTES + IV_BYTES, !near)
    this.#sendKeys = near ? nearToFar : farToNear
    // The frames reader of TLS is done (anything after the peer's HELLO is not read); a new one
    // reads the records' plaintext.
    this.#frames.stop()
    this.#frames = new FrameReader(this)
    this.#records = new RecordReader(this.role === 'near' ? farToNear : nearToFar, this)
    this.#listen(tls, false)
    tls.on('error', ignoreError)
    // The far end's HELLO is the last thing its TLS socket writes; the near end's left long ago.
    if (this.role === 'far') this.#sendHello(HELLO_FLAGS.records, () => this.#dropTls())
    else this.#dropTls()
    this.#socket = plain
    this.#fd = handleFd(plain)
    plain.setNoDelay(true)
    this.#listen(plain)
    this.state = state
    if (state === 'up') {
      // The first record: the far end may write records once it read it.
      this.send(frameHeader(FRAME.HEARTBEAT, 0, 0))
      this.#up()
    }
  }

  #dropTls(): void {
    this.#tls?.destroy()
    this.#tls = undefined
  }

  #up(): void {
    this.state = 'up'
    this.#options.logger.info({ peer: this.peer, role: this.role, localPort: this.localPort, records: this.records }, 'pair link up')
    this.#events.onLinkUp(this)
  }

  /** The one way a link ends: once, with one line when it had been up. */
  #down(reason: LinkDownReason, detail?: string): void {
    if (this.state === 'down') return
    const wasUp = this.state === 'up'
    this.state = 'down'
    clearInterval(this.#timer)
    this.#socket.destroy()
    this.#dropTls()
    if (reason === 'local') return
    const fields = { peer: this.peer, role: this.role, reason, detail, upMs: Math.round(performance.now() - this.#startedAt) }
    if (wasUp) this.#options.logger.warn(fields, 'pair link down')
    // bad_hello: the peer's proof failed here; closed or error: the peer refused ours (or went away).
    else this.#options.logger.warn(fields, 'pair link refused during the hello')
    this.#events.onLinkDown(this, reason)
  }
}

function linkOnTick(link: PairLink): void {
  link.tick()
}

function linkUncork(link: PairLink): void {
  link.uncork()
}

function ignoreError(): void {}

/** The far end's listening side: every connection that completes the handshake becomes a PairLink. */
export class PairLinkServer {
  readonly links = new Set<PairLink>()
  readonly #server: tls.Server
  readonly #options: LinkOptions

  constructor(options: LinkOptions, refusals: RefusalLog, events: LinkEvents) {
    this.#options = options
    const psk = options.keys.psk
    this.#server = tls.createServer({
      ...TLS_OPTIONS,
      pskCallback: () => psk,
      // A handshake is a few round trips: one that takes 3 heartbeats is as dead as a silent link.
      handshakeTimeout: 3 * options.heartbeatMs,
    })
    this.#server.on('secureConnection', (socket: TLSSocket) => {
      const link = new PairLink(socket, 'far', options, {
        onLinkUp: (l) => events.onLinkUp(l),
        onLinkControl: (l, type, channel, payload) => events.onLinkControl(l, type, channel, payload),
        onLinkData: (l, channel, piece) => events.onLinkData(l, channel, piece),
        onLinkDown: (l, reason) => {
          this.links.delete(l)
          events.onLinkDown(l, reason)
        },
      })
      this.links.add(link)
    })
    this.#server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      const peer = formatPeer(socket.remoteAddress, socket.remotePort)
      refusals.refused(err.code === 'ERR_SSL_BINDER_DOES_NOT_VERIFY' ? 'pair_bad_secret' : 'pair_not_pair', { peer, error: err.code ?? err.message })
    })
  }

  /**
   * Listens (`fd`: on a listening socket handed over by an upgrade, as it is); rejects with the
   * listen error (the caller names the setting).
   */
  async listen(host: string | undefined, port: number, fd?: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      const listening = (): void => {
        this.#server.off('error', reject)
        resolve()
      }
      if (fd === undefined) this.#server.listen({ host, port }, listening)
      else this.#server.listen({ fd }, listening)
    })
    this.#server.removeAllListeners('error')
    this.#server.on('error', (err) => this.#options.logger.error({ err }, 'pair listener error'))
    return this.#server.address() as AddressInfo
  }

  /** The listening descriptor (an upgrade hands it over); undefined when not listening. */
  get fd(): number | undefined {
    return this.#server.listening ? handleFd(this.#server) : undefined
  }

  /** Stops accepting at once (the links stay); `listen` may follow. */
  stopListening(): void {
    if (this.#server.listening) this.#server.close()
  }

  /** Stops accepting links; those open stay (their owner closes them). */
  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()))
  }
}

/**
 * The near end's link to its far end: connects, and connects again with backoff each time the
 * link fails or dies, until stopped. Each attempt is a new socket, so a new source port.
 */
export class LinkDialer {
  /** The link, once authenticated; undefined while there is none. */
  link: PairLink | undefined
  readonly #far: { host: string; port: number }
  readonly #options: LinkOptions
  readonly #events: LinkEvents
  #attempt = 0
  #retry: NodeJS.Timeout | undefined
  #connecting: TLSSocket | undefined
  /** The link being set up (its HELLO not yet verified). */
  #pending: PairLink | undefined
  #stopped = false

  constructor(far: { host: string; port: number }, options: LinkOptions, events: LinkEvents) {
    this.#far = far
    this.#options = options
    this.#events = events
  }

  start(): void {
    this.#connect()
  }

  /** No more attempts; the link, if any, is closed (no onLinkDown). */
  stop(): void {
    this.#stopped = true
    clearTimeout(this.#retry)
    this.#connecting?.destroy()
    this.#pending?.close()
    this.link?.close()
    this.link = undefined
  }

  #connect(): void {
    this.#retry = undefined
    if (this.#stopped) return
    const far = this.#far
    const psk = this.#options.keys.psk
    const socket = tls.connect({
      ...TLS_OPTIONS,
      host: far.host,
      port: far.port,
      // No certificate: the pre-shared key authenticates the far end (and the hello again).
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk, identity: PSK_IDENTITY }),
    })
    this.#connecting = socket
    let done = false
    const fail = (reason: LinkFailReason, detail: string): void => {
      if (done) return
      done = true
      clearTimeout(timeout)
      socket.destroy()
      this.#connecting = undefined
      this.#failed(reason, detail)
    }
    const timeout = setTimeout(() => fail('handshake_timeout', `no handshake within ${3 * this.#options.heartbeatMs} ms`), 3 * this.#options.heartbeatMs)
    socket.once('error', (err: NodeJS.ErrnoException) => fail(classifyDialError(err), err.code ?? err.message))
    socket.once('close', () => fail('handshake_failed', 'closed during the handshake'))
    socket.once('secureConnect', () => {
      done = true
      clearTimeout(timeout)
      socket.removeAllListeners('error')
      socket.removeAllListeners('close')
      this.#connecting = undefined
      this.#pending = new PairLink(socket, 'near', this.#options, {
        onLinkUp: (link) => {
          this.#pending = undefined
          this.#attempt = 0
          this.link = link
          this.#events.onLinkUp(link)
        },
        onLinkControl: (link, type, channel, payload) => this.#events.onLinkControl(link, type, channel, payload),
        onLinkData: (link, channel, piece) => this.#events.onLinkData(link, channel, piece),
        onLinkDown: (link, reason) => {
          if (this.#pending === link) {
            // Refused by its own line (bad hello); retried like any failed attempt.
            this.#pending = undefined
            this.#scheduleRetry(false)
            return
          }
          this.link = undefined
          this.#events.onLinkDown(link, reason)
          // A link that was up is tried again at once: the path may be fine and only its mapping gone.
          this.#scheduleRetry(true)
        },
      })
    })
  }

  #failed(reason: LinkFailReason, detail: string): void {
    if (this.#stopped) return
    const retryInMs = this.#scheduleRetry(false)
    this.#options.logger.warn({ far: formatEndpoint(this.#far.host, this.#far.port), reason, detail, attempt: this.#attempt, retryInMs }, 'pair link failed')
  }

  /** The next attempt: at once after a link that was up, else 0.1 s doubling to 5 s, with jitter. */
  #scheduleRetry(now: boolean): number {
    if (this.#stopped) return 0
    const n = this.#attempt++
    const base = now ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** n)
    // Jitter: many near ends cut off by one failure do not all come back in step.
    const delay = Math.round(base * (0.8 + 0.4 * Math.random()))
    this.#retry = setTimeout(() => this.#connect(), delay)
    return delay
  }
}

/**
 * What a failed connect says. Without the secret the far end rejects the key's binder
 * (illegal_parameter) or the handshake (decrypt_error, handshake_failure): bad_secret.
 */
function classifyDialError(err: NodeJS.ErrnoException): LinkFailReason {
  const code = err.code ?? ''
  if (code === 'ERR_SSL_SSLV3_ALERT_ILLEGAL_PARAMETER' || code === 'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR' || code === 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE') return 'bad_secret'
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS')) return 'handshake_failed'
  return 'connect_failed'
}
