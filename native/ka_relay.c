// The byte pump: moves bytes between a session's two sockets inside the event loop, with no
// JavaScript per chunk. JavaScript keeps every decision about how a session ends; this file
// only reports what the sockets did (connected, end of stream, error, closed) and carries out
// what it is told (send a FIN after the queued bytes, reset, close).
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
// - A socket error is reported even on a leg not being read (EPOLLERR comes regardless);
//   relayCheckPaused() also looks at the kernel's state of legs paused by backpressure.
// - Nothing here frees a relay while JavaScript holds it or an event may still name it.
//
// One pump per process: the state below is global, and the addon is loaded by the main
// thread only.

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <node_api.h>
#include <uv.h>

#include "ka_native.h"

enum { LEG_CLIENT = 0, LEG_TARGET = 1 };
enum { EV_CONNECT = 1, EV_EOF = 2, EV_ERROR = 3, EV_CLOSE = 4 };

// One read's worth. Large reads matter for bulk transfers (fewer system calls per byte); the
// buffer is shared, so its size costs nothing per session.
#define READ_SIZE (256 * 1024)
// Reads per turn before other sockets get theirs.
#define READS_PER_TURN 4
// Events taken from the kernel per epoll_wait.
#define EVENTS_PER_WAIT 128
// Drained queues kept for reuse: a bulk transfer fills and drains one at every stall, and a
// fresh allocation of this size is an mmap and a page fault per 4 KiB.
#define QUEUE_POOL_MAX 16

typedef struct relay relay_t;
typedef struct leg leg_t;

struct leg {
  relay_t* relay;
  int index;
  int fd;  // -1 once closed
  // Bytes read from the other leg that this leg's socket has not taken yet.
  char* queue;
  size_t queue_cap;
  size_t queue_off;
  size_t queue_len;
  double bytes_read;
  leg_t* ready_next;
  unsigned registered : 1;  // in the epoll set (counts in open_legs)
  unsigned readable : 1;    // edge seen, no EAGAIN since
  unsigned writable : 1;
  unsigned peer_fin : 1;    // EPOLLRDHUP seen: read to the end, a short read proves nothing
  unsigned in_ready : 1;
  unsigned connecting : 1;
  unsigned read_eof : 1;
  unsigned fin_wanted : 1;
  unsigned fin_sent : 1;
  unsigned failed : 1;
  unsigned dead_drain : 1;  // the kernel closed it while it was paused: read it regardless
};

struct relay {
  leg_t legs[2];
  napi_env env;
  napi_ref owner;     // strong until both legs are closed, then released
  napi_ref callback;  // likewise
  int started;        // bytes flow (set by start(), after the target leg connected)
  int js_alive;       // the JavaScript wrapper has not been finalised
  relay_t* paused_prev;
  relay_t* paused_next;
  int in_paused_list;
  relay_t* grave_next;
};

static char read_buffer[READ_SIZE];
static char* queue_pool[QUEUE_POOL_MAX];
static int queue_pool_len = 0;
static relay_t* paused_head = NULL;

static int epfd = -1;
static uv_poll_t epoll_watch;  // the epoll descriptor, in Node's loop
static uv_idle_t ready_runner; // drains the ready queue without blocking the loop
static int open_legs = 0;      // the loop is kept alive while > 0
static int dispatching = 0;
static leg_t* ready_head = NULL;
static leg_t* ready_tail = NULL;
static relay_t* graveyard = NULL;

static leg_t* other_leg(leg_t* leg) { return &leg->relay->legs[1 - leg->index]; }

static size_t queued(const leg_t* leg) { return leg->queue_len - leg->queue_off; }

static void queue_release(leg_t* leg) {
  if (leg->queue == NULL) return;
  if (leg->queue_cap == READ_SIZE && queue_pool_len < QUEUE_POOL_MAX) {
    queue_pool[queue_pool_len++] = leg->queue;
  } else {
    free(leg->queue);
  }
  leg->queue = NULL;
  leg->queue_cap = leg->queue_off = leg->queue_len = 0;
}

// Appends to a leg's queue; 0 when memory ran out.
static int queue_append(leg_t* leg, const char* data, size_t len) {
  if (leg->queue == NULL && len <= READ_SIZE) {
    leg->queue = queue_pool_len > 0 ? queue_pool[--queue_pool_len] : malloc(READ_SIZE);
    if (leg->queue == NULL) return 0;
    leg->queue_cap = READ_SIZE;
  } else if (leg->queue == NULL || leg->queue_len + len > leg->queue_cap) {
    // Only a dead leg read to its end, or a queue written to after a stall, gets here.
    size_t live = queued(leg);
    size_t cap = live + len > READ_SIZE ? live + len : READ_SIZE;
    char* grown = malloc(cap);
    if (grown == NULL) return 0;
    if (live > 0) memcpy(grown, leg->queue + leg->queue_off, live);
    queue_release(leg);
    leg->queue = grown;
    leg->queue_cap = cap;
    leg->queue_len = live;
  }
  memcpy(leg->queue + leg->queue_len, data, len);
  leg->queue_len += len;
  return 1;
}

// ---- calling JavaScript ----------------------------------------------------------------

static void emit(relay_t* r, int kind, int leg, int err) {
  if (r->owner == NULL || r->callback == NULL) return;
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value owner, callback, argv[3], result;
  if (napi_get_reference_value(env, r->owner, &owner) == napi_ok &&
      napi_get_reference_value(env, r->callback, &callback) == napi_ok &&
      napi_create_int32(env, kind, &argv[0]) == napi_ok && napi_create_int32(env, leg, &argv[1]) == napi_ok &&
      napi_create_int32(env, err, &argv[2]) == napi_ok) {
    if (napi_make_callback(env, NULL, owner, callback, 3, argv, &result) != napi_ok) {
      // An exception in the handler is a bug in the proxy: surface it like any other.
      bool pending = false;
      napi_value exception;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
          napi_get_and_clear_last_exception(env, &exception) == napi_ok) {
        napi_fatal_exception(env, exception);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

// ---- the paused list ---------------------------------------------------------------------

// Paused: open, relaying, not at its end, and not read because the other leg's queue is full.
static int leg_paused(const leg_t* leg) {
  const leg_t* to = &leg->relay->legs[1 - leg->index];
  return leg->fd >= 0 && leg->relay->started && !leg->read_eof && !leg->failed && !leg->dead_drain &&
         to->fd >= 0 && queued(to) > 0;
}

static void update_paused(relay_t* r) {
  int paused = leg_paused(&r->legs[0]) || leg_paused(&r->legs[1]);
  if (paused == r->in_paused_list) return;
  if (paused) {
    r->paused_prev = NULL;
    r->paused_next = paused_head;
    if (paused_head) paused_head->paused_prev = r;
    paused_head = r;
  } else {
    if (r->paused_prev) r->paused_prev->paused_next = r->paused_next;
    else paused_head = r->paused_next;
    if (r->paused_next) r->paused_next->paused_prev = r->paused_prev;
    r->paused_prev = r->paused_next = NULL;
  }
  r->in_paused_list = paused;
}

// ---- registration, readiness and lifetime ----------------------------------------------

static int wants_read(const leg_t* leg) {
  const leg_t* to = &leg->relay->legs[1 - leg->index];
  if (leg->fd < 0 || !leg->relay->started || leg->read_eof || leg->failed || leg->connecting) return 0;
  return leg->dead_drain || to->fd < 0 || queued(to) == 0;
}

static int register_leg(leg_t* leg) {
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = leg;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, leg->fd, &ev) != 0) return errno;
  leg->registered = 1;
  if (open_legs++ == 0) uv_ref((uv_handle_t*)&epoll_watch);
  return 0;
}

static void on_ready(uv_idle_t* handle);

static void make_ready(leg_t* leg) {
  if (leg->in_ready || leg->fd < 0) return;
  leg->in_ready = 1;
  leg->ready_next = NULL;
  if (ready_tail) ready_tail->ready_next = leg;
  else ready_head = leg;
  ready_tail = leg;
  uv_idle_start(&ready_runner, on_ready);  // a no-op when already started
}

// A relay is freed once JavaScript has let go of it and no queued event can still name it.
static void bury(void) {
  relay_t** link = &graveyard;
  while (*link != NULL) {
    relay_t* r = *link;
    if (r->legs[0].in_ready || r->legs[1].in_ready) {
      link = &r->grave_next;
      continue;
    }
    *link = r->grave_next;
    free(r);
  }
}

// Both legs closed: JavaScript will hear nothing more, so the relay stops holding it.
static void release_if_done(relay_t* r) {
  if (r->legs[0].fd >= 0 || r->legs[1].fd >= 0) return;
  if (r->owner) napi_delete_reference(r->env, r->owner);
  if (r->callback) napi_delete_reference(r->env, r->callback);
  r->owner = r->callback = NULL;
}

static void resume_reader(leg_t* leg);

static void close_leg(leg_t* leg, int reset) {
  if (leg->fd < 0) return;
  relay_t* r = leg->relay;
  queue_release(leg);
  if (reset) {
    struct linger lg = {1, 0};
    setsockopt(leg->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  // The pump holds the only descriptor of this socket: closing it takes it out of the epoll
  // set, and events already taken for it are skipped (fd < 0).
  close(leg->fd);
  leg->fd = -1;
  if (leg->registered) {
    leg->registered = 0;
    if (--open_legs == 0) uv_unref((uv_handle_t*)&epoll_watch);
  }
  update_paused(r);
  // The other leg may have been waiting for this one's queue: it reads (and drops) again.
  resume_reader(other_leg(leg));
}

static void fail_leg(leg_t* leg, int err) {
  leg->failed = 1;
  update_paused(leg->relay);
  emit(leg->relay, EV_ERROR, leg->index, err);
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
    close_leg(leg, 0);
    return 1;
  }
  return 0;
}

static void closed_by_pump(leg_t* leg) {
  emit(leg->relay, EV_CLOSE, leg->index, 0);
  release_if_done(leg->relay);
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
  update_paused(leg->relay);
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
  else update_paused(to->relay);
}

static void read_leg(leg_t* leg) {
  relay_t* r = leg->relay;
  for (int i = 0; i < READS_PER_TURN; i++) {
    if (!wants_read(leg)) return;  // stays readable: resumed when the other queue drains
    ssize_t n = recv(leg->fd, read_buffer, READ_SIZE, MSG_DONTWAIT);
    if (n > 0) {
      leg->bytes_read += (double)n;
      forward(other_leg(leg), read_buffer, (size_t)n);
      // Edge-triggered, a short read means the socket is empty: bytes arriving later raise a
      // new edge. Not so once the peer's FIN is in: nothing would signal the end of stream.
      if ((size_t)n < READ_SIZE && !leg->peer_fin) {
        leg->readable = 0;
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      leg->readable = 0;
      return;
    }
    if (n < 0) {
      fail_leg(leg, errno);
      return;
    }
    leg->read_eof = 1;
    leg->readable = 0;
    update_paused(r);
    emit(r, EV_EOF, leg->index, 0);
    if (finish_if_done(leg)) closed_by_pump(leg);
    return;
  }
  make_ready(leg);  // more to read: after the others have had their turn
}

// What a leg can do now: drain its queue, then read.
static void service(leg_t* leg) {
  if (leg->fd >= 0 && leg->writable && queued(leg) > 0) flush_queue(leg);
  if (leg->fd >= 0 && leg->readable && wants_read(leg)) read_leg(leg);
}

static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

static void on_event(leg_t* leg, uint32_t events) {
  relay_t* r = leg->relay;
  if (leg->fd < 0 || leg->failed) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) leg->readable = 1;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) leg->writable = 1;
  if (events & (EPOLLRDHUP | EPOLLHUP)) leg->peer_fin = 1;
  if (leg->connecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = socket_error(leg->fd);
    leg->connecting = 0;
    if (err != 0) {
      fail_leg(leg, err);
      return;
    }
    // start() is normally called from this event.
    emit(r, EV_CONNECT, leg->index, 0);
    service(&r->legs[LEG_CLIENT]);
    service(leg);
    return;
  }
  if (events & EPOLLERR) {
    // What was received before the error is still readable and goes first; a leg that is
    // not being read learns of the error at once.
    if (wants_read(leg)) read_leg(leg);
    if (leg->fd >= 0 && !leg->failed && !leg->read_eof) {
      int err = socket_error(leg->fd);
      if (err != 0) fail_leg(leg, err);
    }
    return;
  }
  service(leg);
}

static void on_epoll(uv_poll_t* handle, int status, int events) {
  (void)handle;
  (void)status;
  (void)events;
  struct epoll_event batch[EVENTS_PER_WAIT];
  int n = epoll_wait(epfd, batch, EVENTS_PER_WAIT, 0);
  dispatching++;
  for (int i = 0; i < n; i++) on_event((leg_t*)batch[i].data.ptr, batch[i].events);
  dispatching--;
  bury();
}

static void on_ready(uv_idle_t* handle) {
  leg_t* leg = ready_head;
  ready_head = ready_tail = NULL;
  dispatching++;
  while (leg != NULL) {
    leg_t* next = leg->ready_next;
    leg->in_ready = 0;
    service(leg);
    leg = next;
  }
  dispatching--;
  bury();
  if (ready_head == NULL && graveyard == NULL) uv_idle_stop(handle);
}

static int pump_init(napi_env env) {
  if (epfd >= 0) return 1;
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return 0;
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return 0;
  if (uv_poll_init(loop, &epoll_watch, epfd) != 0 || uv_poll_start(&epoll_watch, UV_READABLE, on_epoll) != 0) {
    close(epfd);
    epfd = -1;
    return 0;
  }
  uv_unref((uv_handle_t*)&epoll_watch);
  uv_idle_init(loop, &ready_runner);
  uv_unref((uv_handle_t*)&ready_runner);
  return 1;
}

// ---- the JavaScript class ----------------------------------------------------------------

static relay_t* unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* args) {
  napi_value self;
  void* data = NULL;
  if (napi_get_cb_info(env, info, argc, args, &self, NULL) != napi_ok || napi_unwrap(env, self, &data) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "not a Relay");
    return NULL;
  }
  return (relay_t*)data;
}

static leg_t* leg_arg(napi_env env, relay_t* r, napi_value* args, size_t argc) {
  int32_t index;
  if (!ka_get_int_arg(env, args, argc, 0, &index)) return NULL;
  if (index != LEG_CLIENT && index != LEG_TARGET) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "leg must be 0 (client) or 1 (target)");
    return NULL;
  }
  return &r->legs[index];
}

// The leg named by a method's single argument.
static leg_t* leg_of_call(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  relay_t* r = unwrap(env, info, &argc, args);
  return r ? leg_arg(env, r, args, argc) : NULL;
}

static void finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  relay_t* r = (relay_t*)data;
  // Only reached once both legs are closed (the relay holds its owner until then), but a
  // leg left open by a bug must not leak its descriptor.
  close_leg(&r->legs[0], 0);
  close_leg(&r->legs[1], 0);
  r->js_alive = 0;
  r->grave_next = graveyard;
  graveyard = r;
  if (!dispatching) bury();
  if (graveyard != NULL) uv_idle_start(&ready_runner, on_ready);
}

// new Relay(clientFd, owner, callback): takes a duplicate of the accepted socket's descriptor
// (the caller then closes its own) and will call callback.call(owner, kind, leg, errno).
static napi_value relay_new(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3], self;
  if (napi_get_cb_info(env, info, &argc, args, &self, NULL) != napi_ok) return NULL;
  int32_t client_fd;
  if (!ka_get_int_arg(env, args, argc, 0, &client_fd)) return NULL;
  napi_valuetype type;
  if (argc < 3 || napi_typeof(env, args[2], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "expected (fd, owner, callback)");
    return NULL;
  }
  relay_t* r = calloc(1, sizeof *r);
  if (r == NULL) return ka_throw_errno(env, ENOMEM, "calloc", "relay");
  r->env = env;
  r->js_alive = 1;
  for (int i = 0; i < 2; i++) {
    r->legs[i].relay = r;
    r->legs[i].index = i;
    r->legs[i].fd = -1;
  }
  leg_t* client = &r->legs[LEG_CLIENT];
  client->fd = fcntl(client_fd, F_DUPFD_CLOEXEC, 0);
  int err = client->fd < 0 ? errno : register_leg(client);
  if (err != 0) {
    if (client->fd >= 0) close(client->fd);
    free(r);
    return ka_throw_errno(env, err, "dup", "client");
  }
  if (napi_create_reference(env, args[1], 1, &r->owner) != napi_ok ||
      napi_create_reference(env, args[2], 1, &r->callback) != napi_ok ||
      napi_wrap(env, self, r, finalize, NULL, NULL) != napi_ok) {
    close_leg(client, 0);
    release_if_done(r);
    r->js_alive = 0;
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot create Relay");
    return NULL;
  }
  return self;
}

// connect(address, port, family): opens the target leg, non-blocking; CONNECT or ERROR follows.
// Returns null, or the errno name when it failed at once.
static napi_value relay_connect(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  relay_t* r = unwrap(env, info, &argc, args);
  if (r == NULL) return NULL;
  char address[64];
  int32_t port, family;
  if (argc < 3 || napi_get_value_string_utf8(env, args[0], address, sizeof address, NULL) != napi_ok ||
      !ka_get_int_arg(env, args, argc, 1, &port) || !ka_get_int_arg(env, args, argc, 2, &family)) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "expected (address, port, family)");
    return NULL;
  }
  leg_t* target = &r->legs[LEG_TARGET];
  if (target->fd >= 0 || r->legs[LEG_CLIENT].fd < 0 || r->started) {
    napi_throw_error(env, "KA_NATIVE_STATE", "connect: target leg already open, or relay closed or started");
    return NULL;
  }
  // A new attempt after a failed one (the next address of the target's name) starts clean.
  leg_t* ready_next = target->ready_next;
  unsigned in_ready = target->in_ready;  // a queued leg stays linked where it is
  memset(target, 0, sizeof *target);
  target->ready_next = ready_next;
  target->in_ready = in_ready;
  target->relay = r;
  target->index = LEG_TARGET;
  target->fd = -1;
  struct sockaddr_storage sa;
  socklen_t sa_len;
  memset(&sa, 0, sizeof sa);
  if (family == 6) {
    struct sockaddr_in6* in6 = (struct sockaddr_in6*)&sa;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, address, &in6->sin6_addr) != 1) goto bad_address;
    sa_len = sizeof *in6;
  } else {
    struct sockaddr_in* in4 = (struct sockaddr_in*)&sa;
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &in4->sin_addr) != 1) goto bad_address;
    sa_len = sizeof *in4;
  }
  int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    target->fd = fd;
    target->connecting = 1;
    err = register_leg(target);
    if (err == 0 && connect(fd, (struct sockaddr*)&sa, sa_len) != 0 && errno != EINPROGRESS) err = errno;
  }
  napi_value result;
  if (err == 0) {
    napi_get_null(env, &result);
    return result;
  }
  if (target->fd >= 0) {
    target->connecting = 0;
    target->failed = 1;
  }
  napi_create_string_utf8(env, ka_errno_name(err), NAPI_AUTO_LENGTH, &result);
  return result;
bad_address:
  napi_throw_type_error(env, "KA_NATIVE_ARG", "connect: not a numeric address");
  return NULL;
}

// start(): both legs begin relaying (after CONNECT).
static napi_value relay_start(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  relay_t* r = unwrap(env, info, &argc, NULL);
  if (r == NULL) return NULL;
  r->started = 1;
  // Bytes that arrived before now raised their edge already.
  for (int i = 0; i < 2; i++) {
    if (r->legs[i].readable) make_ready(&r->legs[i]);
  }
  return NULL;
}

static napi_value make_bool(napi_env env, int value) {
  napi_value result;
  napi_get_boolean(env, value, &result);
  return result;
}

// end(leg): a FIN to that leg's peer once its queue has drained. True when the leg closed
// at once (its stream had already ended the other way).
static napi_value relay_end(napi_env env, napi_callback_info info) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  if (leg->fd < 0) return make_bool(env, 0);
  leg->fin_wanted = 1;
  int closed = finish_if_done(leg);
  if (closed) release_if_done(leg->relay);
  return make_bool(env, closed);
}

static napi_value close_with(napi_env env, napi_callback_info info, int reset) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  close_leg(leg, reset && !leg->connecting);
  release_if_done(leg->relay);
  return NULL;
}

// reset(leg): RST to that leg's peer, queued bytes discarded.
static napi_value relay_reset(napi_env env, napi_callback_info info) { return close_with(env, info, 1); }

// destroy(leg): plain close (a leg that failed, or one with nothing left to say).
static napi_value relay_destroy(napi_env env, napi_callback_info info) { return close_with(env, info, 0); }

// state(leg) -> [bytes queued for it, FIN asked for, FIN sent]: what teardown asks.
static napi_value relay_state(napi_env env, napi_callback_info info) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  napi_value result, v;
  napi_create_array_with_length(env, 3, &result);
  napi_create_double(env, (double)queued(leg), &v);
  napi_set_element(env, result, 0, v);
  napi_get_boolean(env, leg->fin_wanted, &v);
  napi_set_element(env, result, 1, v);
  napi_get_boolean(env, leg->fin_sent, &v);
  napi_set_element(env, result, 2, v);
  return result;
}

// One number about the leg named by the single argument.
static napi_value leg_number(napi_env env, napi_callback_info info, int bytes) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  napi_value result;
  napi_create_double(env, bytes ? leg->bytes_read : (double)leg->fd, &result);
  return result;
}

// fd(leg) -> the leg's descriptor, -1 once closed (for socket-option calls).
static napi_value relay_fd(napi_env env, napi_callback_info info) { return leg_number(env, info, 0); }

// bytes(leg) -> bytes read from that leg so far.
static napi_value relay_bytes(napi_env env, napi_callback_info info) { return leg_number(env, info, 1); }

#define TCP_STATE_CLOSE 7

// relayCheckPaused() -> how many paused legs were found dead and are now read to their end.
static napi_value relay_check_paused(napi_env env, napi_callback_info info) {
  (void)info;
  int found = 0;
  relay_t* next;
  for (relay_t* r = paused_head; r != NULL; r = next) {
    next = r->paused_next;
    for (int i = 0; i < 2; i++) {
      leg_t* leg = &r->legs[i];
      if (!leg_paused(leg)) continue;
      struct tcp_info ti;
      socklen_t len = sizeof ti;
      if (getsockopt(leg->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || ti.tcpi_state != TCP_STATE_CLOSE) continue;
      leg->dead_drain = 1;
      leg->readable = 1;  // read until the kernel says EAGAIN, end of stream or the error
      found++;
      make_ready(leg);
    }
    update_paused(r);
  }
  napi_value result;
  napi_create_int32(env, found, &result);
  return result;
}

int ka_relay_init(napi_env env, napi_value exports) {
  if (!pump_init(env)) return 0;
  napi_property_descriptor methods[] = {
      {"connect", NULL, relay_connect, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, relay_start, NULL, NULL, NULL, napi_default, NULL},
      {"end", NULL, relay_end, NULL, NULL, NULL, napi_default, NULL},
      {"reset", NULL, relay_reset, NULL, NULL, NULL, napi_default, NULL},
      {"destroy", NULL, relay_destroy, NULL, NULL, NULL, napi_default, NULL},
      {"state", NULL, relay_state, NULL, NULL, NULL, napi_default, NULL},
      {"bytes", NULL, relay_bytes, NULL, NULL, NULL, napi_default, NULL},
      {"fd", NULL, relay_fd, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls, check;
  if (napi_define_class(env, "Relay", NAPI_AUTO_LENGTH, relay_new, NULL, sizeof methods / sizeof methods[0], methods,
                        &cls) != napi_ok ||
      napi_set_named_property(env, exports, "Relay", cls) != napi_ok ||
      napi_create_function(env, "relayCheckPaused", NAPI_AUTO_LENGTH, relay_check_paused, NULL, &check) != napi_ok ||
      napi_set_named_property(env, exports, "relayCheckPaused", check) != napi_ok) {
    return 0;
  }
  return 1;
}
