// The native helper of ka-proxy, one N-API addon (ka_native.node) of four parts:
//
//   ka_sockopt.c   socket options Node cannot set (TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT,
//                  SO_OOBINLINE), their read-back, TCP_INFO, send queues, socket addresses
//   ka_pump.c      the byte pump's event loop; ka_relay.c its Relay class (ka_pump.h between);
//                  ka_accept.c its Acceptor class (listening sockets in the pump's epoll set)
//   ka_notify.c    sd_notify's sendto to a Unix datagram socket
//   ka_fdpass.c    descriptors with a payload over a Unix socket (SCM_RIGHTS), for the upgrade
//
// This file registers the four and holds what they share: errno names, errors that carry them,
// integer arguments. JavaScript loads the addon in one place, src/native.ts, which also declares
// its exports.

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <node_api.h>

#include "ka_native.h"

const char* ka_errno_name(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != NULL) return name;
#endif
  switch (err) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return "EUNKNOWN";
  }
}

// Throws Error{code: "EBADF", errno: 9, syscall: "setsockopt", option: "TCP_KEEPCNT"}.
napi_value ka_throw_errno(napi_env env, int err, const char* syscall, const char* option) {
  char message[192];
  snprintf(message, sizeof message, "%s(%s): %s", syscall, option, strerror(err));
  napi_value code, msg, error, value;
  if (napi_create_string_utf8(env, ka_errno_name(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_error(env, code, msg, &error) != napi_ok) {
    napi_throw_error(env, ka_errno_name(err), message);
    return NULL;
  }
  if (napi_create_int32(env, err, &value) == napi_ok) napi_set_named_property(env, error, "errno", value);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value) == napi_ok)
    napi_set_named_property(env, error, "syscall", value);
  if (napi_create_string_utf8(env, option, NAPI_AUTO_LENGTH, &value) == napi_ok)
    napi_set_named_property(env, error, "option", value);
  napi_throw(env, error);
  return NULL;
}

// An integer argument: 2**32+1, NaN, Infinity or 1.5 are refused, not wrapped into another
// number (napi_get_value_int32 would turn them into 1, 0, 0 and 1: a different descriptor).
int ka_get_int_arg(napi_env env, napi_value* args, size_t argc, size_t index, int32_t* out) {
  napi_valuetype type;
  double value;
  if (index >= argc || napi_typeof(env, args[index], &type) != napi_ok || type != napi_number ||
      napi_get_value_double(env, args[index], &value) != napi_ok) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "expected integer arguments (fd, ...)");
    return 0;
  }
  if (!isfinite(value) || value != floor(value) || value < INT32_MIN || value > INT32_MAX) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "expected integer arguments (fd, ...) from -2**31 to 2**31-1");
    return 0;
  }
  *out = (int32_t)value;
  return 1;
}

napi_value ka_class_call(napi_env env, napi_callback_info info, size_t* argc, napi_value* args, const char* usage, int32_t* fd) {
  napi_value self, new_target;
  if (napi_get_cb_info(env, info, argc, args, &self, NULL) != napi_ok || napi_get_new_target(env, info, &new_target) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "napi_get_cb_info failed");
    return NULL;
  }
  if (new_target == NULL) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", usage);
    return NULL;
  }
  if (!ka_get_int_arg(env, args, *argc, 0, fd)) return NULL;
  if (*fd < 0) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "fd must be an integer from 0 to 2**31-1");
    return NULL;
  }
  napi_valuetype owner_type, callback_type;
  if (*argc < 3 || napi_typeof(env, args[1], &owner_type) != napi_ok || napi_typeof(env, args[2], &callback_type) != napi_ok ||
      (owner_type != napi_object && owner_type != napi_function) || callback_type != napi_function) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "expected (fd, owner object, callback function)");
    return NULL;
  }
  return self;
}

void* ka_unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* args, const char* what) {
  napi_value self;
  void* data = NULL;
  if (napi_get_cb_info(env, info, argc, args, &self, NULL) != napi_ok || napi_unwrap(env, self, &data) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", what);
    return NULL;
  }
  return data;
}

int ka_get_fd_arg(napi_env env, napi_callback_info info, int32_t* fd) {
  size_t argc = 1;
  napi_value args[1];
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "napi_get_cb_info failed");
    return 0;
  }
  return ka_get_int_arg(env, args, argc, 0, fd);
}

int ka_define_class(napi_env env, napi_value exports, const char* name, napi_callback ctor, const napi_property_descriptor* methods,
                    size_t count) {
  napi_value cls;
  return napi_define_class(env, name, NAPI_AUTO_LENGTH, ctor, NULL, count, methods, &cls) == napi_ok &&
         napi_set_named_property(env, exports, name, cls) == napi_ok;
}

int ka_js_init(napi_env env, ka_js_t* js, napi_value owner, napi_value callback) {
  if (napi_create_reference(env, owner, 1, &js->owner) == napi_ok && napi_create_reference(env, callback, 1, &js->callback) == napi_ok) {
    return 1;
  }
  ka_js_release(env, js);
  return 0;
}

void ka_js_release(napi_env env, ka_js_t* js) {
  if (js->owner) napi_delete_reference(env, js->owner);
  if (js->callback) napi_delete_reference(env, js->callback);
  js->owner = js->callback = NULL;
}

int ka_js_call(napi_env env, ka_js_t* js, size_t argc, napi_value* argv) {
  napi_value owner, callback, result;
  if (js->owner == NULL || js->callback == NULL || napi_get_reference_value(env, js->owner, &owner) != napi_ok ||
      napi_get_reference_value(env, js->callback, &callback) != napi_ok) {
    return 0;
  }
  // A plain call: the callback scope around it (the pump's dispatch) is what runs the microtasks
  // and next ticks it queues, once the dispatch is done.
  return napi_call_function(env, owner, callback, argc, argv, &result) == napi_ok ? 1 : -1;
}

void ka_surface_exception(napi_env env) {
  bool pending = false;
  napi_value exception;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending && napi_get_and_clear_last_exception(env, &exception) == napi_ok) {
    napi_fatal_exception(env, exception);
  }
}

static napi_value init(napi_env env, napi_value exports) {
  if (!ka_sockopt_init(env, exports)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot register the socket options");
    return NULL;
  }
  if (!ka_relay_init(env, exports)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot register Relay");
    return NULL;
  }
  if (!ka_accept_init(env, exports)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot register Acceptor");
    return NULL;
  }
  if (!ka_notify_init(env, exports)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot register notify");
    return NULL;
  }
  if (!ka_fdpass_init(env, exports)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot register descriptor passing");
    return NULL;
  }
  if (!ka_aead_init(env, exports)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot register Aead");
    return NULL;
  }
  if (!ka_send_init(env, exports)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot register sendSome");
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
