// The connection-survival lab: real namespaces, a NAT that forgets idle flows, faults on demand,
// and the relays and scenarios measured in it. Used by bench/survival.ts and test/lab-*.test.ts.

export { createLab, Lab, ADDRESSES, type LabOptions, type Role } from './lab.ts'
export { labUnsupported } from './preflight.ts'
export { startEchoServer, EchoServer } from './echo.ts'
export { DataTimeoutBox, boxUnavailable } from './box.ts'
export { startClientDriver, ClientDriver } from './clients.ts'
export { startPostgres, postgresUnavailable, idleQuery, holdPgSessions, PgSessions, type Postgres, type IdleQueryResult, type PgAnswer } from './postgres.ts'
export { startBulkStream, BulkStream, type BulkResult } from './bulk.ts'
export { natFlushUnavailable } from './faults.ts'
export { tcpSockets, heldSockets, socketsAt, type SocketInfo, type Endpoint } from './ss.ts'
export { sleep } from './exec.ts'
export * from './relays/index.ts'
export * from './scenarios/index.ts'
