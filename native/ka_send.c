// sendSome(fd, buffer) -> bytes written: one send(2) of a Node socket's bytes, for a caller that
// writes a socket whose write queue is empty (src/pair/direct-write.ts: a paired session's plain
// leg, a pair link's records): what the kernel takes at once goes without Node's stream machinery
// (its write request, its completion callback, its bookkeeping), which cost a paired round trip
// more than the system call itself. The caller hands the rest, if any, to Node's socket as usual,
// so what is queued is still Node's and in order.
//
// Returns the bytes the kernel took (0 when it took none: EAGAIN), or -errno on any other
// failure without throwing: the caller then writes through Node, whose own attempt reports the
// error as that socket's (its 'error' event), once. MSG_NOSIGNAL: a peer gone is EPIPE, never a
// signal. A call with a bad argument throws.

#include <errno.h>
#include <sys/socket.h>
#include <node_api.h>

#include "ka_native.h"

static napi_value send_some(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  int32_t fd;
  bool is_buffer = false;
  void* data = NULL;
  size_t length = 0;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || !ka_get_int_arg(env, args, argc, 0, &fd)) return NULL;
  if (argc < 2 || napi_is_buffer(env, args[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, args[1], &data, &length) != napi_ok) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "sendSome(fd, buffer): buffer must be a Buffer");
    return NULL;
  }
  ssize_t n = 0;
  if (length > 0) {
    do {
      n = send(fd, data, length, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
  }
  double result = n >= 0 ? (double)n : (errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -(double)errno);
  napi_value out;
  if (napi_create_double(env, result, &out) != napi_ok) return NULL;
  return out;
}

int ka_send_init(napi_env env, napi_value exports) {
  napi_value fn;
  return napi_create_function(env, "sendSome", NAPI_AUTO_LENGTH, send_some, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, "sendSome", fn) == napi_ok;
}
