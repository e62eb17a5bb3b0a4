// What the addon's parts share: argument and errno helpers (ka_native.c, which registers the
// rest), the socket options' registration (ka_sockopt.c), the byte pump's (ka_relay.c; its
// event loop is ka_pump.c), sd_notify's (ka_notify.c) and descriptor passing's (ka_fdpass.c).
#ifndef KA_NATIVE_H
#define KA_NATIVE_H

#include <stdint.h>
#include <node_api.h>

const char* ka_errno_name(int err);
napi_value ka_throw_errno(napi_env env, int err, const char* syscall, const char* option);
int ka_get_int_arg(napi_env env, napi_value* args, size_t argc, size_t index, int32_t* out);
int ka_sockopt_init(napi_env env, napi_value exports);
int ka_relay_init(napi_env env, napi_value exports);
int ka_notify_init(napi_env env, napi_value exports);
int ka_fdpass_init(napi_env env, napi_value exports);

#endif
