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
// Rules it keeps, mirrored from the JavaScript session:
// - A leg is closed by the pump itself only when its stream has ended both ways (end of
//   stream read, and our FIN sent after its queue drained); JavaScript is told with CLOSE.
// - A leg not being read because its peer is slow cannot learn that its connection died:
//   relayCheckPaused() looks at the kernel's state of every such leg, and reads a dead one
//   to its end, so the end of stream or error is reported.
// - Nothing here frees a relay while a poll handle is open or JavaScript holds it.

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <node_api.h>
#include <uv.h>

#include "ka_native.h"

enum { LEG_CLIENT = 0, LEG_TARGET = 1 };
enum { EV_CONNECT = 1, EV_EOF = 2, EV_ERROR = 3, EV_CLOSE = 4 };

// One read's worth. Large reads matter for bulk transfers (fewer system calls per byte); the
// buffer is shared, so its size costs nothing per session.
#define READ_SIZE (256 * 1024)
// Reads per readiness event before other sockets get their turn.
#define READS_PER_EVENT 4
// Drained queues kept for reuse: a bulk transfer fills and drains one at every stall, and a
// fresh allocation of this size is an mmap and a page fault per 4 KiB.
#define QUEUE_POOL_MAX 64

typedef struct relay relay_t;

typedef struct {
  relay_t* relay;
  int index;
  int fd;  // -1 once closed
  uv_poll_t poll;
  int poll_open;  // the poll handle was initialised and not yet handed to uv_close
  int events;     // what the poll handle is watching now
  // Bytes read from the other leg that this leg's socket has not taken yet.
  char* queue;
  size_t queue_cap;
  size_t queue_off;
  size_t queue_len;
  double bytes_read;
  unsigned connecting : 1;
  unsigned read_eof : 1;
  unsigned fin_wanted : 1;
  unsigned fin_sent : 1;
  unsigned failed : 1;
  unsigned dead_drain : 1;  // the kernel closed it while it was paused: read it regardless
} leg_t;

struct relay {
  leg_t legs[2];
  napi_env env;
  napi_ref owner;     // strong until both legs are closed, then released
  napi_ref callback;  // likewise
  int started;        // bytes flow (set by start(), after the target leg connected)
  int handles_open;   // poll handles not yet through their close callback
  int js_alive;       // the JavaScript wrapper has not been finalised
  relay_t* paused_prev;
  relay_t* paused_next;
  int in_paused_list;
};

static char read_buffer[READ_SIZE];
static char* queue_pool[QUEUE_POOL_MAX];
static int queue_pool_len = 0;
static relay_t* paused_head = NULL;

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

// ---- polling -----------------------------------------------------------------------------

static void on_poll(uv_poll_t* handle, int status, int events);

static int wants_read(const leg_t* leg) {
  const leg_t* to = &leg->relay->legs[1 - leg->index];
  if (leg->fd < 0 || !leg->relay->started || leg->read_eof || leg->failed || leg->connecting) return 0;
  return leg->dead_drain || to->fd < 0 || queued(to) == 0;
}

static int wants_write(const leg_t* leg) {
  return leg->fd >= 0 && !leg->failed && (leg->connecting || queued(leg) > 0);
}

static void update_poll(leg_t* leg) {
  if (!leg->poll_open) return;
  int events = (wants_read(leg) ? UV_READABLE : 0) | (wants_write(leg) ? UV_WRITABLE : 0);
  if (events != leg->events) {
    if (events == 0) uv_poll_stop(&leg->poll);
    else uv_poll_start(&leg->poll, events, on_poll);
    leg->events = events;
  }
}

static void update_both(relay_t* r) {
  update_poll(&r->legs[0]);
  update_poll(&r->legs[1]);
  update_paused(r);
}

static void on_handle_closed(uv_handle_t* handle) {
  leg_t* leg = (leg_t*)handle->data;
  relay_t* r = leg->relay;
  if (--r->handles_open == 0 && !r->js_alive) free(r);
}

// Both legs closed: JavaScript will hear nothing more, so the relay stops holding it.
static void release_if_done(relay_t* r) {
  if (r->legs[0].fd >= 0 || r->legs[1].fd >= 0) return;
  if (r->owner) napi_delete_reference(r->env, r->owner);
  if (r->callback) napi_delete_reference(r->env, r->callback);
  r->owner = r->callback = NULL;
}

static void close_leg(leg_t* leg, int reset) {
  if (leg->fd < 0) return;
  relay_t* r = leg->relay;
  queue_release(leg);
  if (leg->poll_open) {
    // uv_close takes the fd out of epoll at once, so closing it right after is safe.
    leg->poll_open = 0;
    leg->events = 0;
    uv_close((uv_handle_t*)&leg->poll, on_handle_closed);
  }
  if (reset) {
    struct linger lg = {1, 0};
    setsockopt(leg->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  close(leg->fd);
  leg->fd = -1;
  update_both(r);
}

static void fail_leg(leg_t* leg, int err) {
  leg->failed = 1;
  update_both(leg->relay);
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

static void flush_queue(leg_t* leg) {
  while (queued(leg) > 0) {
    ssize_t n = send(leg->fd, leg->queue + leg->queue_off, queued(leg), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      leg->queue_off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    fail_leg(leg, n < 0 ? errno : EPIPE);
    return;
  }
  if (queued(leg) == 0) {
    queue_release(leg);
    if (finish_if_done(leg)) {
      emit(leg->relay, EV_CLOSE, leg->index, 0);
      release_if_done(leg->relay);
      return;
    }
  }
  update_both(leg->relay);
}

// Hands bytes just read from one leg to the other: straight into its socket when nothing is
// queued, and whatever it does not take into its queue.
static void forward(leg_t* to, const char* data, size_t len) {
  if (to->fd < 0 || to->failed || to->fin_wanted) return;  // nobody to take it
  size_t sent = 0;
  if (queued(to) == 0) {
    while (sent < len) {
      ssize_t n = send(to->fd, data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += (size_t)n;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      fail_leg(to, n < 0 ? errno : EPIPE);
      return;
    }
  }
  if (sent < len && !queue_append(to, data + sent, len - sent)) fail_leg(to, ENOMEM);
}

static void read_leg(leg_t* leg) {
  relay_t* r = leg->relay;
  for (int i = 0; i < READS_PER_EVENT && wants_read(leg); i++) {
    ssize_t n = recv(leg->fd, read_buffer, READ_SIZE, MSG_DONTWAIT);
    if (n > 0) {
      leg->bytes_read += (double)n;
      forward(other_leg(leg), read_buffer, (size_t)n);
      if ((size_t)n < READ_SIZE) break;  // the socket is empty for now
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) {
      fail_leg(leg, errno);
      return;
    }
    leg->read_eof = 1;
    update_both(r);
    emit(r, EV_EOF, leg->index, 0);
    if (finish_if_done(leg)) {
      emit(r, EV_CLOSE, leg->index, 0);
      release_if_done(r);
    }
    return;
  }
  update_both(r);
}

static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

static void on_poll(uv_poll_t* handle, int status, int events) {
  leg_t* leg = (leg_t*)handle->data;
  relay_t* r = leg->relay;
  if (leg->fd < 0) return;
  if (status < 0) {
    // POLLERR: libuv has stopped the handle; the socket's pending error says what happened.
    leg->events = 0;
    int err = socket_error(leg->fd);
    if (err == 0) err = EIO;
    leg->connecting = 0;
    fail_leg(leg, err);
    return;
  }
  if (leg->connecting) {
    if (!(events & UV_WRITABLE)) return;
    int err = socket_error(leg->fd);
    leg->connecting = 0;
    if (err != 0) {
      fail_leg(leg, err);
      return;
    }
    update_both(r);
    emit(r, EV_CONNECT, leg->index, 0);
    return;
  }
  if ((events & UV_WRITABLE) && queued(leg) > 0) {
    flush_queue(leg);
    if (leg->fd < 0 || leg->failed) return;
  }
  if (events & (UV_READABLE | UV_DISCONNECT)) read_leg(leg);
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
  if (r->handles_open == 0) free(r);
}

static int open_poll(napi_env env, leg_t* leg) {
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return EINVAL;
  int rc = uv_poll_init_socket(loop, &leg->poll, leg->fd);
  if (rc != 0) return -rc;
  leg->poll.data = leg;
  leg->poll_open = 1;
  leg->relay->handles_open++;
  return 0;
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
  int err = client->fd < 0 ? errno : open_poll(env, client);
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
  if (target->fd >= 0 || r->legs[LEG_CLIENT].fd < 0) {
    napi_throw_error(env, "KA_NATIVE_STATE", "connect: target leg already open, or relay closed");
    return NULL;
  }
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
    err = open_poll(env, target);
    if (err == 0 && connect(fd, (struct sockaddr*)&sa, sa_len) != 0 && errno != EINPROGRESS) err = errno;
  }
  napi_value result;
  if (err == 0) {
    update_both(r);
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
  update_both(r);
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
  else update_both(leg->relay);
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

// state(leg) -> [fd (-1 when closed), bytes read from it, bytes queued for it, fin sent]
static napi_value relay_state(napi_env env, napi_callback_info info) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  napi_value result, v;
  napi_create_array_with_length(env, 4, &result);
  napi_create_int32(env, leg->fd, &v);
  napi_set_element(env, result, 0, v);
  napi_create_double(env, leg->bytes_read, &v);
  napi_set_element(env, result, 1, v);
  napi_create_double(env, (double)queued(leg), &v);
  napi_set_element(env, result, 2, v);
  napi_get_boolean(env, leg->fin_sent, &v);
  napi_set_element(env, result, 3, v);
  return result;
}

// bytes(leg) -> bytes read from that leg so far.
static napi_value relay_bytes(napi_env env, napi_callback_info info) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  napi_value result;
  napi_create_double(env, leg->bytes_read, &result);
  return result;
}

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
      found++;
    }
    update_both(r);
  }
  napi_value result;
  napi_create_int32(env, found, &result);
  return result;
}

int ka_relay_init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"connect", NULL, relay_connect, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, relay_start, NULL, NULL, NULL, napi_default, NULL},
      {"end", NULL, relay_end, NULL, NULL, NULL, napi_default, NULL},
      {"reset", NULL, relay_reset, NULL, NULL, NULL, napi_default, NULL},
      {"destroy", NULL, relay_destroy, NULL, NULL, NULL, napi_default, NULL},
      {"state", NULL, relay_state, NULL, NULL, NULL, napi_default, NULL},
      {"bytes", NULL, relay_bytes, NULL, NULL, NULL, napi_default, NULL},
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
