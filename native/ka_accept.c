// Accepting in the byte pump: `new Acceptor(listenFd, owner, callback)` watches a listening
// socket in the pump's own epoll set (ka_pump.c) and accepts there, with accept4 (non-blocking,
// close-on-exec, the peer's address in the same call), as many as are waiting up to a turn's
// worth; JavaScript gets them in one call, callback.call(owner, [fd, host, port, ...], errno).
//
// Why: Node's accept path costs a libuv handle, a JavaScript object and a getpeername per
// client, and the pump then took a duplicate of the descriptor and closed Node's (a dup, an
// SO_OOBINLINE, a close). Here a client costs one accept4, and the relay takes its descriptor
// as it is (Relay flag RELAY_OWN_FD); SO_OOBINLINE, keepalive and TCP_NODELAY are inherited
// from the listening socket, where src/socket-control.ts sets them.
//
// The acceptor holds its own duplicate of the listening descriptor: the caller (Node's server,
// which bound it) closes its copy, and the acceptor's is what an upgrade hands over (fd()).
// Out of descriptors (EMFILE and the like) it stops watching, so a level-triggered socket that
// stays readable does not spin, reports the error, and JavaScript calls resume() later.

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <node_api.h>

#include "ka_native.h"
#include "ka_pump.h"

// Accepts per readiness event: a storm is served in batches, the other sockets get their turn
// between them (the listening socket is level-triggered: what is left is reported again).
#define ACCEPTS_PER_TURN 64

struct ka_acceptor {
  napi_env env;
  ka_pump_t* pump;  // its environment's; referenced until the acceptor is finalized
  int fd;        // the acceptor's duplicate of the listening socket; -1 once closed
  int watched;   // in the epoll set
  int per_turn;  // accepts per readiness event, 1..ACCEPTS_PER_TURN (batch())
  ka_js_t js;    // held while open
};


// The close sends an RST (SO_LINGER on, timeout 0: listed in src/socket-control.ts).
static void close_reset(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

// [fd, host, port, ...] for JavaScript; NULL when it cannot be built (the caller closes the fds).
static napi_value batch_array(napi_env env, const int* fds, const struct sockaddr_storage* addrs, int n) {
  napi_value list;
  if (napi_create_array_with_length(env, (size_t)n * 3, &list) != napi_ok) return NULL;
  for (int i = 0; i < n; i++) {
    napi_value fd;
    if (napi_create_int32(env, fds[i], &fd) != napi_ok || napi_set_element(env, list, (uint32_t)i * 3, fd) != napi_ok ||
        !ka_push_address(env, list, (uint32_t)i * 3 + 1, &addrs[i])) {
      return NULL;
    }
  }
  return list;
}

static void emit(ka_acceptor_t* a, const int* fds, const struct sockaddr_storage* addrs, int n, int err) {
  napi_env env = a->env;
  napi_handle_scope scope;
  int called = 0;
  // The dispatch's scope first: it outlives this handle scope.
  if (ka_pump_js_scope(a->pump) && napi_open_handle_scope(env, &scope) == napi_ok) {
    napi_value argv[2];
    argv[0] = batch_array(env, fds, addrs, n);
    // Once called, the descriptors are JavaScript's, whatever the callback does. JavaScript
    // guards each client; an exception that gets here is a bug past that guard.
    if (argv[0] != NULL && napi_create_int32(env, err, &argv[1]) == napi_ok) called = ka_js_call(env, &a->js, 2, argv);
    if (called < 0) ka_surface_exception(env);
    napi_close_handle_scope(env, scope);
  }
  // Nobody was told of these clients: they are turned away rather than leaked.
  if (called == 0) {
    for (int i = 0; i < n; i++) close_reset(fds[i]);
  }
}

void ka_accept_ready(ka_acceptor_t* a) {
  if (a->fd < 0 || a->js.owner == NULL) return;
  int fds[ACCEPTS_PER_TURN];
  struct sockaddr_storage addrs[ACCEPTS_PER_TURN];
  int n = 0;
  int err = 0;
  while (n < a->per_turn) {
    socklen_t len = sizeof addrs[n];
    int fd = accept4(a->fd, (struct sockaddr*)&addrs[n], &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      fds[n++] = fd;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    // A client that left before it was accepted, a signal, or a network error of that one
    // connection (accept(2): treat those like EAGAIN, the next one may be fine).
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM || errno == ENETDOWN ||
        errno == ENOPROTOOPT || errno == EHOSTDOWN || errno == ENONET || errno == EHOSTUNREACH || errno == EOPNOTSUPP ||
        errno == ENETUNREACH) {
      continue;
    }
    err = errno;
    break;
  }
  if (err != 0) {
    // Level-triggered, the socket stays readable: watched again once JavaScript says so.
    ka_pump_unwatch_listener(a->pump, a->fd);
    a->watched = 0;
  }
  if (n > 0 || err != 0) emit(a, fds, addrs, n, err);
}

// ---- the JavaScript class ----------------------------------------------------------------

static void acceptor_close_fd(ka_acceptor_t* a) {
  if (a->fd < 0) return;
  // Out of the epoll set before the close: Node's copy may still be open a moment.
  if (a->watched) ka_pump_unwatch_listener(a->pump, a->fd);
  a->watched = 0;
  close(a->fd);
  a->fd = -1;
  ka_pump_hold(a->pump, 0);
}

static void acceptor_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  ka_acceptor_t* a = data;
  // Still open when its environment is torn down (a worker exits): its references go too.
  ka_js_release(env, &a->js);
  acceptor_close_fd(a);
  ka_pump_unref(a->pump);
  free(a);
}

static ka_acceptor_t* unwrap_acceptor(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  return ka_unwrap(env, info, &argc, NULL, "not an Acceptor");
}

// new Acceptor(listenFd, owner, callback): watches a duplicate of the listening descriptor (the
// caller closes its own when it likes).
static napi_value acceptor_new(napi_env env, napi_callback_info info) {
  int32_t listen_fd;
  napi_value args[3];
  size_t argc = sizeof args / sizeof args[0];
  napi_value self = ka_class_call(env, info, &argc, args, "Acceptor is a class: use new Acceptor(fd, owner, callback)", &listen_fd);
  if (self == NULL) return NULL;
  int listening = 0;
  socklen_t len = sizeof listening;
  if (getsockopt(listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) return ka_throw_errno(env, errno, "getsockopt", "SO_ACCEPTCONN");
  if (!listening) return ka_throw_errno(env, EINVAL, "Acceptor", "not a listening socket");
  ka_pump_t* pump = ka_pump_init(env);
  if (pump == NULL) return NULL;
  ka_acceptor_t* a = calloc(1, sizeof *a);
  if (a == NULL) return ka_throw_errno(env, ENOMEM, "calloc", "acceptor");
  a->env = env;
  a->pump = pump;
  a->per_turn = ACCEPTS_PER_TURN;
  a->fd = fcntl(listen_fd, F_DUPFD_CLOEXEC, 0);
  if (a->fd < 0) {
    int err = errno;
    free(a);
    return ka_throw_errno(env, err, "dup", "listening socket");
  }
  int fl = fcntl(a->fd, F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(a->fd, F_SETFL, fl | O_NONBLOCK);
  if (!ka_js_init(env, &a->js, args[1], args[2])) {
    close(a->fd);
    free(a);
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot create Acceptor");
    return NULL;
  }
  int err = ka_pump_watch_listener(pump, a, a->fd);
  if (err != 0) {
    ka_js_release(env, &a->js);
    close(a->fd);
    free(a);
    return ka_throw_errno(env, err, "epoll_ctl", "listening socket");
  }
  a->watched = 1;
  ka_pump_hold(pump, 1);
  ka_pump_ref(pump);
  if (napi_wrap(env, self, a, acceptor_finalize, NULL, NULL) != napi_ok) {
    acceptor_close_fd(a);
    ka_js_release(env, &a->js);
    ka_pump_unref(pump);
    free(a);
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot create Acceptor");
    return NULL;
  }
  return self;
}

// close(): stops accepting and closes the acceptor's descriptor; nothing is reported after it.
static napi_value acceptor_close(napi_env env, napi_callback_info info) {
  ka_acceptor_t* a = unwrap_acceptor(env, info);
  if (a == NULL) return NULL;
  acceptor_close_fd(a);
  ka_js_release(env, &a->js);
  return NULL;
}

// resume(): watches again after an error stopped it (no-op when watching or closed).
static napi_value acceptor_resume(napi_env env, napi_callback_info info) {
  ka_acceptor_t* a = unwrap_acceptor(env, info);
  if (a == NULL) return NULL;
  if (a->fd >= 0 && !a->watched) {
    int err = ka_pump_watch_listener(a->pump, a, a->fd);
    if (err != 0) return ka_throw_errno(env, err, "epoll_ctl", "listening socket");
    a->watched = 1;
  }
  return NULL;
}

// pause(): stops watching until resume() (--workers: another event loop takes the clients
// meanwhile; they wait in the backlog if none does). No-op when not watching or closed.
static napi_value acceptor_pause(napi_env env, napi_callback_info info) {
  ka_acceptor_t* a = unwrap_acceptor(env, info);
  if (a == NULL) return NULL;
  if (a->fd >= 0 && a->watched) {
    ka_pump_unwatch_listener(a->pump, a->fd);
    a->watched = 0;
  }
  return NULL;
}

// batch(n): accepts at most n (1..64) per readiness event. --workers: a loop takes a few
// clients of a burst and leaves the rest to the other loops, which are woken too.
static napi_value acceptor_batch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  ka_acceptor_t* a = ka_unwrap(env, info, &argc, &arg, "not an Acceptor");
  if (a == NULL) return NULL;
  int32_t n = 0;
  if (argc < 1 || napi_get_value_int32(env, arg, &n) != napi_ok || n < 1 || n > ACCEPTS_PER_TURN) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "batch: n must be 1..64");
    return NULL;
  }
  a->per_turn = n;
  return NULL;
}

// fd() -> the acceptor's listening descriptor, -1 once closed (for the upgrade hand-over).
static napi_value acceptor_fd(napi_env env, napi_callback_info info) {
  ka_acceptor_t* a = unwrap_acceptor(env, info);
  if (a == NULL) return NULL;
  napi_value result;
  if (napi_create_int32(env, a->fd, &result) != napi_ok) return NULL;
  return result;
}

// closeReset(fd): closes an accepted client's descriptor with an RST (a refused client).
static napi_value close_reset_fn(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!ka_get_fd_arg(env, info, &fd)) return NULL;
  if (fd < 0) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "closeReset: fd must not be negative");
    return NULL;
  }
  close_reset(fd);
  return NULL;
}

int ka_accept_init(napi_env env, napi_value exports) {
  static const napi_property_descriptor methods[] = {KA_METHOD("close", acceptor_close), KA_METHOD("resume", acceptor_resume),
                                                     KA_METHOD("pause", acceptor_pause), KA_METHOD("batch", acceptor_batch),
                                                     KA_METHOD("fd", acceptor_fd)};
  napi_value fn;
  return ka_define_class(env, exports, "Acceptor", acceptor_new, methods, sizeof methods / sizeof methods[0]) &&
         napi_create_function(env, "closeReset", NAPI_AUTO_LENGTH, close_reset_fn, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, "closeReset", fn) == napi_ok;
}
