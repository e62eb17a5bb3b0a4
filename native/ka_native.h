// What the addon's parts share: argument and errno helpers (ka_native.c, which registers the
// rest), the socket options' registration (ka_sockopt.c), the byte pump's (ka_relay.c; its
// event loop is ka_pump.c), sd_notify's (ka_notify.c), descriptor passing's (ka_fdpass.c) and the
// pair link's sealed records' (ka_aead.c) and a socket's direct send (ka_send.c).
#ifndef KA_NATIVE_H
#define KA_NATIVE_H

#include <stdint.h>
#include <node_api.h>

const char* ka_errno_name(int err);
napi_value ka_throw_errno(napi_env env, int err, const char* syscall, const char* option);
int ka_get_int_arg(napi_env env, napi_value* args, size_t argc, size_t index, int32_t* out);
// A class called as `new X(fd, owner, callback, ...)` (the pump's Relay and Acceptor): reads up
// to *argc arguments into args and the fd into *fd, and returns `this`, or NULL with an error
// thrown when it was not called with new (`usage` says how), fd is not an integer from 0 to
// 2**31-1, owner is not an object or callback not a function.
napi_value ka_class_call(napi_env env, napi_callback_info info, size_t* argc, napi_value* args, const char* usage, int32_t* fd);

// The native object behind `this` of a method call, reading up to *argc arguments into args;
// NULL with an error thrown (`what`: "not a Relay") when there is none.
void* ka_unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* args, const char* what);
// The single fd argument of a function; 0 with an error thrown.
int ka_get_fd_arg(napi_env env, napi_callback_info info, int32_t* fd);

// A method of a class, for ka_define_class.
#define KA_METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}
// exports[name] = a class of constructor `ctor` and these methods; 0 when it cannot.
int ka_define_class(napi_env env, napi_value exports, const char* name, napi_callback ctor, const napi_property_descriptor* methods,
                    size_t count);

// How a native object calls JavaScript: callback.call(owner, ...), inside the callback scope its
// pump opens once per dispatch (ka_pump_js_scope). Both references are strong until ka_js_release.
typedef struct {
  napi_ref owner;
  napi_ref callback;
} ka_js_t;
// 0 when it cannot be set up (nothing is held then).
int ka_js_init(napi_env env, ka_js_t* js, napi_value owner, napi_value callback);
void ka_js_release(napi_env env, ka_js_t* js);
// Calls it (the caller holds a handle scope, inside its pump's callback scope): 1 done, 0 not
// called (released, or N-API failed), -1 the callback threw, the exception left pending for
// ka_surface_exception once the caller has cleaned up.
int ka_js_call(napi_env env, ka_js_t* js, size_t argc, napi_value* argv);
// A callback into JavaScript failed with an exception its own guards missed (a bug): it is
// surfaced like any other uncaught one.
void ka_surface_exception(napi_env env);
struct sockaddr_storage;
// array[at] = the address's host, array[at + 1] = its port (ka_sockopt.c); 0 when it cannot.
int ka_push_address(napi_env env, napi_value array, uint32_t at, const struct sockaddr_storage* sa);
// SO_KEEPALIVE (values[0]: 0 off, else on), TCP_KEEPIDLE and TCP_KEEPINTVL (s), TCP_KEEPCNT and
// TCP_USER_TIMEOUT (ms) on fd, in that order; a negative value leaves that option as it is.
// 0, or the errno of the first that failed, named in *label (ka_sockopt.c).
int ka_set_keepalive(int fd, const int32_t values[5], const char** label);
int ka_sockopt_init(napi_env env, napi_value exports);
int ka_relay_init(napi_env env, napi_value exports);
int ka_accept_init(napi_env env, napi_value exports);
int ka_notify_init(napi_env env, napi_value exports);
int ka_fdpass_init(napi_env env, napi_value exports);
int ka_aead_init(napi_env env, napi_value exports);
int ka_send_init(napi_env env, napi_value exports);

#endif
