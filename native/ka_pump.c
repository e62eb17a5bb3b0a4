// The byte pump: moves bytes between a session's two sockets inside the event loop, with no
// JavaScript per chunk. JavaScript keeps every decision about how a session ends; this file
// only reports what the sockets did (connected, end of stream, error, closed) and carries out
// what it is told (send a FIN after the queued bytes, reset, close). This is the event loop:
// epoll, the queues, each leg's state. The Relay class JavaScript calls is in ka_relay.c, and
// what the two share is in ka_pump.h.
//
// Why native: the streams machinery costs more per chunk than the two system calls a relay
// needs. Here a readable socket costs one recv into a buffer shared by all sessions and one
// send to the other leg; only what the other leg's kernel buffer cannot take is copied into a
// queue, and then the source is not read until the queue has drained (backpressure).
//
// Polling: every socket of the pump is registered once, edge-triggered, in an epoll instance
// of its own, and that one descriptor is watched by a single libuv poll handle. A session then
// costs one epoll_ctl per socket for its whole life (libuv's per-fd polls cost a probe on
// creation and one call per change of interest: a dozen per session). Edge-triggered means
// each leg remembers whether it is readable or writable until a call says EAGAIN; a leg with
// more to read than its turn allows waits in a ready queue that an idle handle drains.
//
// Rules it keeps, mirrored from the JavaScript session:
// - A leg is closed by the pump itself only when its stream has ended both ways (end of
//   stream read, and our FIN sent after its queue drained); JavaScript is told with CLOSE.
// - A leg the kernel has closed (reset, keepalive or user timeout) is read to its end before
//   the error is reported, paused or not: Linux keeps what was received readable, and those
//   bytes were acknowledged to the peer. A leg paused by backpressure needs no check of its
//   own: its registration never changes (reading or not is the pump's decision, not epoll's),
//   and the kernel raises EPOLLERR on every death (reset, keepalive or user timeout, abort),
//   which the read that empties the leg then returns (or SO_ERROR, when the peer's FIN came
//   first and that read says end of stream); a leg is never left unwatched the way a stream
//   whose reading has stopped leaves epoll (test/paused-leg.test.ts).
// - A socket is read until the kernel says EAGAIN or end of stream, not until a short read:
//   a read stops short at the urgent mark, and more may be waiting behind it. The urgent byte
//   itself is relayed inline (SO_OOBINLINE), in its place in the stream.
// - epoll names a leg by a slot and its generation, never by its address: a registration
//   that outlives its leg (another descriptor of the socket left somewhere) names a freed
//   slot, and its events are dropped. So a close needs no EPOLL_CTL_DEL (register_leg).
// - An exception thrown by the JavaScript callback fails that relay (both legs reset).
// - JavaScript is called only from a dispatch (what one epoll_wait reported, or the ready
//   queue), each callback a plain function call inside one callback scope for the whole
//   dispatch (ka_pump_js_scope): the microtasks and next ticks the callbacks queue run once,
//   when it ends. A callback scope per call (napi_make_callback) and an async context per
//   relay cost more than the call itself: 5 µs of user-space CPU per session closed and 130
//   bytes per idle session (measured 5 December 2026, bench/README.md).
// - Nothing here frees a relay while JavaScript holds it or an event may still name it.
//
// One pump per N-API environment: the main thread and each worker thread that makes a Relay or
// an Acceptor get a pump of their own (its epoll descriptor, its libuv handles on that thread's
// loop, its read buffer and queue pool), kept as the environment's instance data. Nothing here
// is shared between threads. When an environment is torn down (a worker exits) its pump closes
// its handles first; the relays and acceptors still alive are closed by their finalizers, and
// the pump is freed after the last of them (each holds a reference to it).
//
// What a pump per thread costs (measured 1 December 2026, Node 20.20, the shared 2-vCPU machine;
// four idle workers per run, three runs, /proc/self/smaps_rollup): an idle pump adds nothing
// measurable to a worker's PSS (within ±0.1 MiB of a worker that loaded the addon and made the
// same sockets without one); the worker thread itself is 7.4-7.8 MiB. Its read buffer is
// mapped but not touched until the first read, so a pump that has relayed holds 256 KiB more,
// and its queue pool keeps up to QUEUE_POOL_MAX drained queues (4 MiB) after stalls. Setting
// one up (the thread's first Relay) takes 0.09-0.5 ms against 0.03-0.23 ms for the thread's
// first addon call without one, and about 9 µs for each Relay after it: roughly 0.1 ms, once
// per thread.

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <node_api.h>
#include <uv.h>

#include "ka_native.h"
#include "ka_pump.h"


// One read's worth. Large reads matter for bulk transfers (fewer system calls per byte); the
// buffer is shared, so its size costs nothing per session.
#define READ_SIZE (256 * 1024)
// Reads per turn before other sockets get theirs.
#define READS_PER_TURN 4
// Events taken from the kernel per epoll_wait.
#define EVENTS_PER_WAIT 128
// A leg's entry in its pump's slot table. A freed slot's generation moves on, so an event that
// names the slot with an older one (its socket closed, the slot perhaps taken again) is dropped.
typedef struct {
  leg_t* leg;          // NULL while free
  uint32_t gen;
  uint32_t next_free;
} leg_slot_t;

#define NO_SLOT UINT32_MAX

// Drained queues kept for reuse: a bulk transfer fills and drains one at every stall, and a
// fresh allocation of this size is an mmap and a page fault per 4 KiB.
#define QUEUE_POOL_MAX 16

struct ka_pump {
  napi_env env;                  // the environment (thread) it serves
  int epfd;                      // -1 once torn down
  uv_poll_t epoll_watch;         // the epoll descriptor, in that thread's loop
  uv_idle_t ready_runner;        // drains the ready queue without blocking the loop
  napi_async_cleanup_hook_handle cleanup;
  int closing;                   // handles being closed; counts the close callbacks still to come
  int open_legs;                 // the loop is kept alive while > 0
  int dispatching;
  // JavaScript is called inside one callback scope per dispatch (ka_pump_js_scope), in the async
  // context of this resource (an empty object), not a callback scope per call.
  napi_ref js_resource;
  napi_async_context js_context;
  napi_handle_scope js_handles;   // open with js_scope
  napi_callback_scope js_scope;
  int js_open;
  // Freed at 0: one for the environment (its instance data), one for the handles until both
  // are closed, one per relay not yet freed and per acceptor.
  int refs;
  leg_t* ready_head;
  leg_t* ready_tail;
  relay_t* graveyard;
  int queue_pool_len;
  char* queue_pool[QUEUE_POOL_MAX];
  // What epoll hands back for a leg: a slot of this table and its generation, not the leg's
  // address (see register_leg); freed slots are chained from free_slot.
  leg_slot_t* slots;
  uint32_t slots_len;
  uint32_t free_slot;  // NO_SLOT when none
  char read_buffer[READ_SIZE];
};

static leg_t* other_leg(leg_t* leg) { return &leg->relay->legs[1 - leg->index]; }

static size_t queued(const leg_t* leg) { return leg->queue_len - leg->queue_off; }

static void queue_release(leg_t* leg) {
  if (leg->queue == NULL) return;
  ka_pump_t* p = leg->relay->pump;
  if (leg->queue_cap == READ_SIZE && p->queue_pool_len < QUEUE_POOL_MAX) {
    p->queue_pool[p->queue_pool_len++] = leg->queue;
  } else {
    free(leg->queue);
  }
  leg->queue = NULL;
  leg->queue_cap = leg->queue_off = leg->queue_len = 0;
}

// Appends to a leg's queue; 0 when memory ran out.
static int queue_append(leg_t* leg, const char* data, size_t len) {
  ka_pump_t* p = leg->relay->pump;
  if (leg->queue == NULL && len <= READ_SIZE) {
    leg->queue = p->queue_pool_len > 0 ? p->queue_pool[--p->queue_pool_len] : malloc(READ_SIZE);
    if (leg->queue == NULL) return 0;
    leg->queue_cap = READ_SIZE;
  } else if (leg->queue == NULL || leg->queue_len + len > leg->queue_cap) {
    // Only a dead leg read to its end, or a queue written to after a stall, gets here. What
    // is still queued moves to the front; when that is not room enough, the queue doubles, so
    // a long drain copies each byte a bounded number of times instead of once per append.
    size_t live = queued(leg);
    if (leg->queue != NULL && live + len <= leg->queue_cap) {
      memmove(leg->queue, leg->queue + leg->queue_off, live);
    } else {
      size_t cap = leg->queue_cap > READ_SIZE ? leg->queue_cap : READ_SIZE;
      while (cap < live + len) cap *= 2;
      char* grown = malloc(cap);
      if (grown == NULL) return 0;
      if (live > 0) memcpy(grown, leg->queue + leg->queue_off, live);
      queue_release(leg);
      leg->queue = grown;
      leg->queue_cap = cap;
    }
    leg->queue_off = 0;
    leg->queue_len = live;
  }
  memcpy(leg->queue + leg->queue_len, data, len);
  leg->queue_len += len;
  return 1;
}

// ---- registration, readiness and lifetime ----------------------------------------------

static int wants_read(const leg_t* leg) {
  // A reader's reads go to JavaScript, which pauses it; a dead leg is read to its end regardless.
  if (leg->relay->reader) return leg->fd >= 0 && !leg->read_eof && !leg->failed && (leg->dead_drain || !leg->relay->paused);
  const leg_t* to = &leg->relay->legs[1 - leg->index];
  if (leg->fd < 0 || !leg->relay->started || leg->read_eof || leg->failed || leg->connecting) return 0;
  return leg->dead_drain || to->fd < 0 || queued(to) == 0;
}

static void hold_loop(ka_pump_t* p) {
  if (p->open_legs++ == 0 && p->epfd >= 0) uv_ref((uv_handle_t*)&p->epoll_watch);
}

static void release_loop(ka_pump_t* p) {
  if (--p->open_legs == 0 && !p->closing && p->epfd >= 0) uv_unref((uv_handle_t*)&p->epoll_watch);
}

// A free slot for `leg` (the table grows by doubling), or NO_SLOT out of memory.
static uint32_t slot_take(ka_pump_t* p, leg_t* leg) {
  if (p->free_slot == NO_SLOT) {
    uint32_t len = p->slots_len == 0 ? 64 : p->slots_len * 2;
    if (len <= p->slots_len || len > (NO_SLOT >> 2)) return NO_SLOT;
    leg_slot_t* grown = realloc(p->slots, (size_t)len * sizeof *grown);
    if (grown == NULL) return NO_SLOT;
    for (uint32_t i = p->slots_len; i < len; i++) {
      grown[i].leg = NULL;
      grown[i].gen = 0;
      grown[i].next_free = i + 1 < len ? i + 1 : NO_SLOT;
    }
    p->slots = grown;
    p->free_slot = p->slots_len;
    p->slots_len = len;
  }
  uint32_t i = p->free_slot;
  p->free_slot = p->slots[i].next_free;
  p->slots[i].leg = leg;
  return i;
}

static void slot_free(ka_pump_t* p, uint32_t i) {
  p->slots[i].leg = NULL;
  p->slots[i].gen++;
  p->slots[i].next_free = p->free_slot;
  p->free_slot = i;
}

// A leg's epoll data: generation and slot, the low bit clear (LISTENER_TAG marks the others).
static uint64_t slot_data(const ka_pump_t* p, uint32_t i) {
  return ((uint64_t)p->slots[i].gen << 32) | ((uint64_t)i << 1);
}

// The leg an event names, or NULL when its slot has been freed since.
static leg_t* slot_leg(const ka_pump_t* p, uint64_t data) {
  uint32_t i = (uint32_t)(data & 0xffffffffu) >> 1;
  if (i >= p->slots_len || p->slots[i].gen != (uint32_t)(data >> 32)) return NULL;
  return p->slots[i].leg;
}

// 0, or the errno of the call named in *syscall. oob: SO_OOBINLINE is to be set (not inherited).
//
// epoll hands back a slot and its generation rather than the leg's address: a registration can
// outlive the leg when another descriptor of its socket is left somewhere (Node's copy of a
// client the pump duplicated, a construction that failed, a child process between fork and
// exec), since a close takes a socket out of every epoll set only with its last descriptor.
// Such a stale registration then names a freed slot and its events are dropped. That is why a
// close needs no EPOLL_CTL_DEL first (two system calls per session saved); a leg that lets go
// of a descriptor that lives on (ka_pump_release_leg) still leaves the set.
static int register_leg(leg_t* leg, int oob, const char** syscall) {
  // Urgent data is read in its place in the stream, as a byte like any other (see
  // src/socket-control.ts for every option set).
  int one = 1;
  *syscall = "setsockopt(SO_OOBINLINE)";
  if (oob && setsockopt(leg->fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof one) != 0) return errno;
  ka_pump_t* p = leg->relay->pump;
  *syscall = "malloc";
  uint32_t slot = slot_take(p, leg);
  if (slot == NO_SLOT) return ENOMEM;
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = slot_data(p, slot);
  *syscall = "epoll_ctl";
  if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, leg->fd, &ev) != 0) {
    int err = errno;
    slot_free(p, slot);
    return err;
  }
  leg->slot = slot;
  leg->registered = 1;
  hold_loop(p);
  return 0;
}

// Frees the leg's slot; `leave`: its descriptor lives on (released, not closed), so it leaves the
// epoll set too.
static void unregister_leg(leg_t* leg, int leave) {
  if (!leg->registered) return;
  ka_pump_t* p = leg->relay->pump;
  if (leave && p->epfd >= 0) epoll_ctl(p->epfd, EPOLL_CTL_DEL, leg->fd, NULL);
  slot_free(p, leg->slot);
  leg->registered = 0;
  release_loop(p);
}

// Listening sockets are told from legs by the low bit of their epoll data (an acceptor's is its
// address, aligned to at least 8 bytes, with this bit set; a leg's is a slot, shifted left).
#define LISTENER_TAG 1u

int ka_pump_watch_listener(ka_pump_t* p, ka_acceptor_t* a, int fd) {
  struct epoll_event ev;
  // With --workers every loop's pump watches the same listening socket and each is woken by a
  // new client (EPOLLEXCLUSIVE would not change that: this epoll set is itself watched by
  // libuv's, and the kernel wakes every nested set); src/workers.ts shares the clients out.
  ev.events = EPOLLIN;
  ev.data.u64 = (uint64_t)(uintptr_t)a | LISTENER_TAG;
  if (p->epfd < 0) return EBADF;
  return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 ? errno : 0;
}

void ka_pump_unwatch_listener(ka_pump_t* p, int fd) {
  if (p->epfd >= 0) epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void ka_pump_hold(ka_pump_t* p, int hold) {
  if (hold) hold_loop(p);
  else release_loop(p);
}

static void on_ready(uv_idle_t* handle);

static void make_ready(leg_t* leg) {
  ka_pump_t* p = leg->relay->pump;
  // Once torn down nothing drains the queue (a finalizer closing a leg gets here).
  if (leg->in_ready || leg->fd < 0 || p->epfd < 0) return;
  leg->in_ready = 1;
  leg->ready_next = NULL;
  if (p->ready_tail) p->ready_tail->ready_next = leg;
  else p->ready_head = leg;
  p->ready_tail = leg;
  uv_idle_start(&p->ready_runner, on_ready);  // a no-op when already started
}

static void pump_unref(ka_pump_t* p) {
  if (--p->refs > 0) return;
  for (int i = 0; i < p->queue_pool_len; i++) free(p->queue_pool[i]);
  free(p->slots);
  free(p);
}

void ka_pump_ref(ka_pump_t* p) { p->refs++; }
void ka_pump_unref(ka_pump_t* p) { pump_unref(p); }

// A relay is freed once JavaScript has let go of it and no queued event can still name it.
static void bury(ka_pump_t* p) {
  relay_t** link = &p->graveyard;
  while (*link != NULL) {
    relay_t* r = *link;
    if (r->legs[0].in_ready || r->legs[1].in_ready) {
      link = &r->grave_next;
      continue;
    }
    *link = r->grave_next;
    free(r);
    pump_unref(p);  // never the last reference: every caller holds one across the call
  }
}

static void resume_reader(leg_t* leg);

void ka_pump_close_leg(leg_t* leg, int reset) {
  if (leg->fd < 0) return;
  queue_release(leg);
  if (reset) {
    // Linger on, timeout 0: the close sends an RST (listed in src/socket-control.ts).
    struct linger lg = {1, 0};
    setsockopt(leg->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  // The close takes the socket out of the epoll set (when no other descriptor of it is left;
  // else its registration names a freed slot: register_leg). Events already taken for it are
  // skipped (fd < 0).
  unregister_leg(leg, 0);
  close(leg->fd);
  leg->fd = -1;
  // The other leg may have been waiting for this one's queue: it reads (and drops) again.
  resume_reader(other_leg(leg));
}

static void fail_leg(leg_t* leg, int err) {
  leg->failed = 1;
  ka_relay_emit(leg->relay, EV_ERROR, leg->index, err);
}

// After the queue drained: the FIN asked for, and the close of a leg finished both ways.
// Returns 1 when the leg was closed.
static int finish_if_done(leg_t* leg) {
  if (leg->fd < 0 || queued(leg) > 0 || leg->connecting) return 0;
  if (leg->fin_wanted && !leg->fin_sent) {
    shutdown(leg->fd, SHUT_WR);
    leg->fin_sent = 1;
  }
  if (leg->fin_sent && leg->read_eof) {
    ka_pump_close_leg(leg, 0);
    return 1;
  }
  return 0;
}

static void closed_by_pump(leg_t* leg) {
  ka_relay_emit(leg->relay, EV_CLOSE, leg->index, 0);
  ka_relay_release_if_done(leg->relay);
}

// ---- moving bytes ------------------------------------------------------------------------

// Sends what the leg's socket takes now. Returns the bytes sent, or -1 when the leg failed
// (JavaScript has been told). A short count means the socket is full: an edge will follow.
static ssize_t send_some(leg_t* leg, const char* data, size_t len) {
  size_t sent = 0;
  while (sent < len) {
    ssize_t n = send(leg->fd, data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      leg->writable = 0;
      break;
    }
    fail_leg(leg, n < 0 ? errno : EPIPE);
    return -1;
  }
  return (ssize_t)sent;
}

// A leg that stopped reading for the other's queue, or for its turn, reads again.
static void resume_reader(leg_t* leg) {
  if (leg->readable && wants_read(leg)) make_ready(leg);
}

static void flush_queue(leg_t* leg) {
  ssize_t sent = send_some(leg, leg->queue + leg->queue_off, queued(leg));
  if (sent < 0) return;
  leg->queue_off += (size_t)sent;
  if (queued(leg) > 0) return;
  queue_release(leg);
  if (finish_if_done(leg)) {
    closed_by_pump(leg);
    return;
  }
  resume_reader(other_leg(leg));  // the queue that held it back is empty
}

// Hands bytes just read from one leg to the other: straight into its socket when nothing is
// queued, and whatever it does not take into its queue.
static void forward(leg_t* to, const char* data, size_t len) {
  if (to->fd < 0 || to->failed || to->fin_wanted) return;  // nobody to take it
  ssize_t sent = queued(to) == 0 ? send_some(to, data, len) : 0;
  if (sent < 0 || (size_t)sent == len) return;
  if (!queue_append(to, data + sent, len - (size_t)sent)) fail_leg(to, ENOMEM);
}

static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

static void read_leg(leg_t* leg) {
  relay_t* r = leg->relay;
  for (int i = 0; i < READS_PER_TURN; i++) {
    if (!wants_read(leg)) return;  // stays readable: resumed when the other queue drains
    // A reader reads into JavaScript's buffer, which copies what it keeps before the next read.
    char* into = r->reader ? r->into : r->pump->read_buffer;
    size_t into_len = r->reader ? r->into_len : READ_SIZE;
    ssize_t n = recv(leg->fd, into, into_len, MSG_DONTWAIT);
    if (n > 0) {
      leg->bytes_read += (double)n;
      if (r->reader) ka_relay_emit(r, EV_DATA, 0, (int)n);
      else forward(other_leg(leg), into, (size_t)n);
      if (leg->fd < 0 || leg->failed) return;  // the callback ended it meanwhile
      // Edge-triggered, a short read means the socket is empty: bytes arriving later raise a
      // new edge. Not so once the peer's FIN is in (nothing would signal the end of stream),
      // nor with urgent data pending (the read stops at the mark, bytes wait behind it), nor
      // on a dead leg (read to its end).
      if ((size_t)n < into_len && !leg->peer_fin && !leg->urgent && !leg->dead_drain) {
        leg->readable = 0;
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      leg->readable = 0;
      leg->urgent = 0;
      // A closed connection never says EAGAIN (empty, it returns its error or end of stream):
      // the EPOLLERR that started the drain named no failure, and the leg is read as before.
      leg->dead_drain = 0;
      return;
    }
    if (n < 0) {
      // A dead connection's error comes once what it had received has been read.
      fail_leg(leg, errno);
      return;
    }
    // End of stream on a dead connection: it had received the peer's FIN before its failure
    // (then a read reports the end, and the error stays in SO_ERROR).
    int err = leg->dead_drain ? socket_error(leg->fd) : 0;
    if (err != 0) {
      // Everything the dead connection had received is delivered: now its failure.
      fail_leg(leg, err);
      return;
    }
    leg->read_eof = 1;
    leg->readable = 0;
    ka_relay_emit(r, EV_EOF, leg->index, 0);
    if (finish_if_done(leg)) closed_by_pump(leg);
    return;
  }
  make_ready(leg);  // more to read: after the others have had their turn
}

// What a leg can do now: drain its queue, then read.
static void service(leg_t* leg) {
  // Bytes are held before start() only by an adopted relay; they go once it starts (until then
  // the process that handed them over may still take them back).
  if (leg->fd >= 0 && leg->writable && queued(leg) > 0 && leg->relay->started) flush_queue(leg);
  if (leg->fd >= 0 && leg->readable && wants_read(leg)) read_leg(leg);
}

// The kernel closed this leg's connection (EPOLLERR): what it had received is read to its end
// and delivered, and the read that finds nothing more returns the error (SO_ERROR is asked only
// when that read says end of stream instead).
static void start_dead_drain(leg_t* leg) {
  leg->dead_drain = 1;
  leg->readable = 1;
}

static void on_event(leg_t* leg, uint32_t events) {
  relay_t* r = leg->relay;
  if (leg->fd < 0 || leg->failed) return;
  if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) leg->readable = 1;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) leg->writable = 1;
  if (events & (EPOLLRDHUP | EPOLLHUP)) leg->peer_fin = 1;
  if (events & EPOLLPRI) leg->urgent = 1;
  if (leg->connecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    // A connect that failed (refused, reset, timed out) leaves the socket closed with its error
    // set, which Linux reports as EPOLLERR and EPOLLHUP; writable alone is a connect that
    // succeeded, and SO_ERROR (one system call per session) is read only when it can say more.
    int err = (events & (EPOLLERR | EPOLLHUP)) ? socket_error(leg->fd) : 0;
    leg->connecting = 0;
    if (err != 0) {
      fail_leg(leg, err);
      return;
    }
    // The options the session asked for with its connect (CONNECT_KEEPALIVE): no call back into
    // the addon for them. A failure is reported with CONNECT, for the session to log.
    const char* label;
    int keepalive_err = (r->connect_flags & CONNECT_KEEPALIVE) ? ka_set_keepalive(leg->fd, r->target_keepalive, &label) : 0;
    if (r->connect_flags & CONNECT_START) r->started = 1;
    // Else start() is normally called from this event.
    ka_relay_emit(r, EV_CONNECT, leg->index, keepalive_err);
    service(&r->legs[LEG_CLIENT]);
    service(leg);
    return;
  }
  if ((events & EPOLLERR) && !leg->dead_drain) {
    if (r->started && !leg->read_eof) {
      // What was received before the error is still readable and goes first, paused or not:
      // those bytes were acknowledged to the peer. The read that finds nothing more returns the
      // error itself, so SO_ERROR is not asked (a system call per reset session saved).
      start_dead_drain(leg);
    } else {
      // Nothing of it can still be relayed: not relaying yet, or its stream already ended.
      int err = socket_error(leg->fd);
      if (err != 0) {
        fail_leg(leg, err);
        return;
      }
    }
  }
  service(leg);
}

int ka_pump_js_scope(ka_pump_t* p) {
  if (p->js_open) return 1;
  if (p->dispatching == 0) return 0;  // only a dispatch closes it again (leave_js)
  napi_value resource;
  if (napi_open_handle_scope(p->env, &p->js_handles) != napi_ok) return 0;
  if (napi_get_reference_value(p->env, p->js_resource, &resource) != napi_ok || resource == NULL ||
      napi_open_callback_scope(p->env, resource, p->js_context, &p->js_scope) != napi_ok) {
    napi_close_handle_scope(p->env, p->js_handles);
    return 0;
  }
  p->js_open = 1;
  return 1;
}

// The dispatch is done: closing its callback scope runs the microtasks and next ticks its
// callbacks queued (a relay's close reported on a later tick, say), before the loop goes on.
static void leave_js(ka_pump_t* p) {
  if (!p->js_open) return;
  p->js_open = 0;
  napi_close_callback_scope(p->env, p->js_scope);
  napi_close_handle_scope(p->env, p->js_handles);
}

static void on_epoll(uv_poll_t* handle, int status, int events) {
  (void)status;
  (void)events;
  ka_pump_t* p = handle->data;
  struct epoll_event batch[EVENTS_PER_WAIT];
  int n = epoll_wait(p->epfd, batch, EVENTS_PER_WAIT, 0);
  p->dispatching++;
  for (int i = 0; i < n; i++) {
    uint64_t data = batch[i].data.u64;
    if (data & LISTENER_TAG) {
      ka_accept_ready((ka_acceptor_t*)(uintptr_t)(data & ~(uint64_t)LISTENER_TAG));
      continue;
    }
    leg_t* leg = slot_leg(p, data);
    if (leg != NULL) on_event(leg, batch[i].events);
  }
  leave_js(p);
  p->dispatching--;
  bury(p);
}

static void on_ready(uv_idle_t* handle) {
  ka_pump_t* p = handle->data;
  leg_t* leg = p->ready_head;
  p->ready_head = p->ready_tail = NULL;
  p->dispatching++;
  while (leg != NULL) {
    leg_t* next = leg->ready_next;
    leg->in_ready = 0;
    service(leg);
    leg = next;
  }
  leave_js(p);
  p->dispatching--;
  bury(p);
  if (p->ready_head == NULL && p->graveyard == NULL) uv_idle_stop(handle);
}

static void on_pump_handle_closed(uv_handle_t* handle) {
  ka_pump_t* p = handle->data;
  if (--p->closing > 0) return;
  // Both handles are closed: the environment's teardown may go on, and the handles let go.
  napi_async_cleanup_hook_handle hook = p->cleanup;
  p->cleanup = NULL;
  if (hook != NULL) napi_remove_async_cleanup_hook(hook);
  pump_unref(p);
}

// The environment the pump serves is going away (a worker exits, or the process): its handles
// are closed before its loop is. Relays and acceptors still alive are closed by their
// finalizers, later; the pump is freed after the last of them.
static void pump_teardown(napi_async_cleanup_hook_handle handle, void* arg) {
  (void)handle;
  ka_pump_t* p = arg;
  for (leg_t* leg = p->ready_head; leg != NULL; leg = leg->ready_next) leg->in_ready = 0;
  p->ready_head = p->ready_tail = NULL;
  p->closing = 2;
  uv_poll_stop(&p->epoll_watch);
  uv_close((uv_handle_t*)&p->epoll_watch, on_pump_handle_closed);
  uv_close((uv_handle_t*)&p->ready_runner, on_pump_handle_closed);
  close(p->epfd);
  p->epfd = -1;
  bury(p);
}

// What the pump holds of JavaScript (its async resource and context) goes.
static void release_js(napi_env env, ka_pump_t* p) {
  if (p->js_context != NULL) napi_async_destroy(env, p->js_context);
  if (p->js_resource != NULL) napi_delete_reference(env, p->js_resource);
  p->js_context = NULL;
  p->js_resource = NULL;
}

// The environment's instance data is released: the last of its finalizers have run or will.
static void pump_env_gone(napi_env env, void* data, void* hint) {
  (void)hint;
  release_js(env, data);
  pump_unref(data);
}

ka_pump_t* ka_pump_init(napi_env env) {
  void* data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "napi_get_instance_data failed");
    return NULL;
  }
  if (data != NULL) {
    ka_pump_t* p = data;
    if (p->epfd >= 0) return p;
    napi_throw_error(env, "KA_NATIVE_UV", "the byte pump of this thread is closed");
    return NULL;
  }
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "napi_get_uv_event_loop failed");
    return NULL;
  }
  // The read buffer's pages are touched by the first read: an idle pump costs little.
  ka_pump_t* p = malloc(sizeof *p);
  if (p == NULL) {
    ka_throw_errno(env, ENOMEM, "malloc", "pump");
    return NULL;
  }
  memset(p, 0, offsetof(ka_pump_t, read_buffer));
  p->free_slot = NO_SLOT;
  p->env = env;
  napi_value resource, name;
  if (napi_create_object(env, &resource) != napi_ok || napi_create_reference(env, resource, 1, &p->js_resource) != napi_ok ||
      napi_create_string_utf8(env, "ka-proxy:pump", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &p->js_context) != napi_ok) {
    release_js(env, p);
    free(p);
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot create the byte pump's async context");
    return NULL;
  }
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0) {
    int err = errno;
    release_js(env, p);
    free(p);
    ka_throw_errno(env, err, "epoll_create1", "pump");
    return NULL;
  }
  if (uv_poll_init(loop, &p->epoll_watch, p->epfd) != 0) {
    close(p->epfd);
    release_js(env, p);
    free(p);
    napi_throw_error(env, "KA_NATIVE_UV", "uv_poll_init failed");
    return NULL;
  }
  uv_idle_init(loop, &p->ready_runner);
  p->epoll_watch.data = p->ready_runner.data = p;
  p->refs = 1;  // the handles, until closed
  if (uv_poll_start(&p->epoll_watch, UV_READABLE, on_epoll) != 0 ||
      napi_add_async_cleanup_hook(env, pump_teardown, p, &p->cleanup) != napi_ok) {
    // Closed in the loop's next turn, then freed.
    release_js(env, p);
    pump_teardown(NULL, p);
    napi_throw_error(env, "KA_NATIVE_UV", "cannot start the byte pump");
    return NULL;
  }
  uv_unref((uv_handle_t*)&p->epoll_watch);
  uv_unref((uv_handle_t*)&p->ready_runner);
  if (napi_set_instance_data(env, p, pump_env_gone, NULL) != napi_ok) {
    // The cleanup hook closes it with the environment; nothing else can find it.
    release_js(env, p);
    napi_throw_error(env, "KA_NATIVE_NAPI", "napi_set_instance_data failed");
    return NULL;
  }
  p->refs++;  // the environment, until its instance data is released
  return p;
}

// ---- what the Relay class asks (ka_pump.h) -----------------------------------------------

size_t ka_pump_queued(const leg_t* leg) { return queued(leg); }

relay_t* ka_pump_relay_new(ka_pump_t* p, napi_env env, int client_fd, int flags, int* err, const char** syscall, const char** what) {
  *what = "client";
  relay_t* r = calloc(1, sizeof *r);
  if (r == NULL) {
    *err = ENOMEM;
    *syscall = "calloc";
    *what = "relay";
    return NULL;
  }
  r->env = env;
  r->pump = p;
  r->js_alive = 1;
  for (int i = 0; i < 2; i++) {
    r->legs[i].relay = r;
    r->legs[i].index = i;
    r->legs[i].fd = -1;
  }
  leg_t* client = &r->legs[LEG_CLIENT];
  int own = (flags & RELAY_OWN_FD) != 0;
  r->own_fds = own;
  client->fd = own ? client_fd : fcntl(client_fd, F_DUPFD_CLOEXEC, 0);
  if (client->fd < 0) {
    *err = errno;
    *syscall = "dup";
    free(r);
    return NULL;
  }
  *err = register_leg(client, !own, syscall);
  if (*err != 0) {
    // A descriptor of its own stays the caller's on failure, as a duplicated one's original does.
    if (own) client->fd = -1;
    else ka_pump_close_leg(client, 0);
    free(r);
    return NULL;
  }
  ka_pump_ref(p);
  return r;
}

void ka_pump_relay_free(relay_t* r) {
  ka_pump_t* p = r->pump;
  free(r);
  pump_unref(p);
}

void ka_pump_reset_target(relay_t* r) {
  leg_t* target = &r->legs[LEG_TARGET];
  leg_t* ready_next = target->ready_next;
  unsigned in_ready = target->in_ready;  // a queued leg stays linked where it is
  memset(target, 0, sizeof *target);
  target->ready_next = ready_next;
  target->in_ready = in_ready;
  target->relay = r;
  target->index = LEG_TARGET;
  target->fd = -1;
}

int ka_pump_connect(relay_t* r, const struct sockaddr_storage* sa, socklen_t sa_len) {
  leg_t* target = &r->legs[LEG_TARGET];
  int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    // Small writes (a query, a handshake) go out at once, as on the client leg, which inherits
    // TCP_NODELAY from the listening socket (src/socket-control.ts lists every option set).
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    target->fd = fd;
    target->connecting = 1;
    const char* syscall;
    err = register_leg(target, 1, &syscall);
    if (err == 0 && connect(fd, (const struct sockaddr*)sa, sa_len) != 0 && errno != EINPROGRESS) err = errno;
  }
  if (err != 0 && target->fd >= 0) {
    target->connecting = 0;
    target->failed = 1;
  }
  return err;
}

void ka_pump_pause(relay_t* r) { r->paused = 1; }

void ka_pump_start(relay_t* r) {
  r->started = 1;
  r->paused = 0;
  // Bytes that arrived before now raised their edge already.
  for (int i = 0; i < 2; i++) {
    if (r->legs[i].readable || (r->legs[i].writable && queued(&r->legs[i]) > 0)) make_ready(&r->legs[i]);
  }
}

int ka_pump_end(leg_t* leg) {
  if (leg->fd < 0) return 0;
  leg->fin_wanted = 1;
  return finish_if_done(leg);
}

// Out of the epoll set without a close: the descriptor goes to the caller.
int ka_pump_release_leg(leg_t* leg) {
  int fd = leg->fd;
  unregister_leg(leg, 1);
  leg->fd = -1;
  return fd;
}

int ka_pump_detach(relay_t* r, int out_fds[2]) {
  if (!r->started || r->faulted) return 0;
  for (int i = 0; i < 2; i++) {
    const leg_t* leg = &r->legs[i];
    if (leg->fd < 0 || leg->connecting || leg->failed || leg->dead_drain) return 0;
  }
  // Events already taken for these legs are skipped (fd < 0), as after a close.
  for (int i = 0; i < 2; i++) out_fds[i] = ka_pump_release_leg(&r->legs[i]);
  return 1;
}

void ka_pump_drop_queues(relay_t* r) {
  queue_release(&r->legs[0]);
  queue_release(&r->legs[1]);
}

int ka_pump_adopt(relay_t* r, int target_fd, const char* queued_bytes[2], const size_t queued_len[2], const int flags[2],
                  const double bytes[2]) {
  leg_t* target = &r->legs[LEG_TARGET];
  int own = r->own_fds;
  ka_pump_reset_target(r);
  target->fd = own ? target_fd : fcntl(target_fd, F_DUPFD_CLOEXEC, 0);
  if (target->fd < 0) return own ? EBADF : errno;
  int err = 0;
  const char* syscall;
  for (int i = 0; i < 2; i++) {
    int fl = fcntl(r->legs[i].fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(r->legs[i].fd, F_SETFL, fl | O_NONBLOCK);
  }
  // A client taken as it is (RELAY_OWN_FD) was registered without SO_OOBINLINE: it is set here,
  // as on the target leg (the old process set both; a socket keeps its options, this is cheap).
  int one = 1;
  if (own && setsockopt(r->legs[LEG_CLIENT].fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof one) != 0) err = errno;
  for (int i = 0; err == 0 && i < 2; i++) {
    leg_t* leg = &r->legs[i];
    if (queued_len[i] > 0 && !queue_append(leg, queued_bytes[i], queued_len[i])) {
      err = ENOMEM;
      break;
    }
    leg->fin_wanted = (flags[i] & ADOPT_END_REQUESTED) != 0;
    leg->fin_sent = (flags[i] & ADOPT_FIN_SENT) != 0;
    leg->read_eof = (flags[i] & ADOPT_END_RECEIVED) != 0;
    leg->bytes_read = bytes[i];
  }
  if (err == 0) err = register_leg(target, 1, &syscall);
  if (err != 0) {
    ka_pump_drop_queues(r);
    for (int i = 0; i < 2; i++) r->legs[i].fin_wanted = r->legs[i].fin_sent = r->legs[i].read_eof = 0;
    if (own) {
      // Both descriptors are the caller's again, untouched (nothing was sent on them).
      ka_pump_release_leg(target);
      ka_pump_release_leg(&r->legs[LEG_CLIENT]);
    } else {
      close(target->fd);  // never registered: register_leg is the last step
      target->fd = -1;
    }
    return err;
  }
  // A FIN asked for with nothing left before it goes now (it would have gone in the old process).
  for (int i = 0; i < 2; i++) {
    leg_t* leg = &r->legs[i];
    if (leg->fin_wanted && !leg->fin_sent && queued(leg) == 0) {
      shutdown(leg->fd, SHUT_WR);
      leg->fin_sent = 1;
    }
  }
  return 0;
}

void ka_pump_forget(relay_t* r) {
  // Reached once both legs are closed (the relay holds its owner until then), or when its
  // environment is torn down with the session open: a worker thread that failed (one that stops
  // as asked ends its sessions first). Its legs close here with an RST: the session was cut, and
  // a FIN would tell each peer that the other had finished normally.
  ka_pump_close_leg(&r->legs[0], 1);
  ka_pump_close_leg(&r->legs[1], 1);
  ka_pump_t* p = r->pump;
  ka_pump_ref(p);  // held across: the last relay of a torn-down pump frees it
  r->js_alive = 0;
  r->grave_next = p->graveyard;
  p->graveyard = r;
  if (!p->dispatching) bury(p);
  if (p->graveyard != NULL && p->epfd >= 0) uv_idle_start(&p->ready_runner, on_ready);
  pump_unref(p);
}
