// The byte pump's JavaScript class: `new Relay(clientFd, owner, callback)` and its methods
// (connect, start, pause, end, reset, destroy, state, bytes, fd). A relay made as a reader
// (RELAY_READER) has one leg, the socket given, whose reads go to JavaScript (paired sessions'
// plain legs, src/pair/pump-reader.ts). This file checks arguments, turns
// them into calls on the event loop (ka_pump.c, which says how bytes move and when legs close)
// and calls back into JavaScript with what the sockets did. What the two files share is in
// ka_pump.h.

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <node_api.h>

#include "ka_native.h"
#include "ka_pump.h"

// A reader's buffer: far above what src/pair/read-pool.ts gives (256 KiB); a bound so that a
// read's length is an int32.
#define READER_MAX_BUFFER (16u << 20)

// ---- calling JavaScript ----------------------------------------------------------------

// The callback threw: the relay's state in JavaScript is unknown, so the relay ends here,
// both peers reset (they learn of the failure), descriptors freed, JavaScript told no more.
static void fault(relay_t* r) {
  r->faulted = 1;
  ka_pump_close_leg(&r->legs[0], 1);
  ka_pump_close_leg(&r->legs[1], 1);
  ka_relay_release_if_done(r);
}

void ka_relay_emit(relay_t* r, int kind, int leg, int err) {
  if (r->js.owner == NULL || r->faulted) return;
  napi_env env = r->env;
  napi_handle_scope scope;
  // The dispatch's scope first: it outlives this handle scope.
  if (!ka_pump_js_scope(r->pump) || napi_open_handle_scope(env, &scope) != napi_ok) {
    fault(r);
    return;
  }
  napi_value argv[3];
  int called = 0;
  if (napi_create_int32(env, kind, &argv[0]) == napi_ok && napi_create_int32(env, leg, &argv[1]) == napi_ok &&
      napi_create_int32(env, err, &argv[2]) == napi_ok) {
    called = ka_js_call(env, &r->js, 3, argv);
  }
  if (called <= 0) {
    // The JavaScript side catches what its handlers throw and fails the session itself; an
    // exception that still gets here is a bug past that guard: fail the relay, then surface
    // the exception like any other uncaught one.
    fault(r);
    if (called < 0) ka_surface_exception(env);
  }
  napi_close_handle_scope(env, scope);
}

// What the relay holds of JavaScript goes: its owner and callback, and a reader's buffer.
static void release_js(napi_env env, relay_t* r) {
  ka_js_release(env, &r->js);
  if (r->into_ref != NULL) napi_delete_reference(env, r->into_ref);
  r->into_ref = NULL;
}

// Both legs closed: JavaScript will hear nothing more, so the relay stops holding it.
void ka_relay_release_if_done(relay_t* r) {
  if (r->legs[0].fd >= 0 || r->legs[1].fd >= 0) return;
  release_js(r->env, r);
}

// ---- the JavaScript class ----------------------------------------------------------------

static relay_t* unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* args) {
  return ka_unwrap(env, info, argc, args, "not a Relay");
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

// The wrapper is gone: normally once both legs closed (JavaScript was let go of then); when its
// environment is torn down (a worker exits) with the session open, what the relay still holds
// of JavaScript is let go of here, and the pump closes its legs.
static void finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  relay_t* r = data;
  release_js(env, r);
  ka_pump_forget(r);
}

// A number argument that must be an integer in [min, max]: 2**32+1, NaN or Infinity are not
// quietly wrapped into some other descriptor or port.
static int int_in_range(napi_env env, napi_value* args, size_t argc, size_t index, int32_t min, int32_t max,
                        const char* what, int32_t* out) {
  napi_valuetype type;
  double value;
  if (index >= argc || napi_typeof(env, args[index], &type) != napi_ok || type != napi_number ||
      napi_get_value_double(env, args[index], &value) != napi_ok) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", what);
    return 0;
  }
  if (!isfinite(value) || value != floor(value) || value < min || value > max) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", what);
    return 0;
  }
  *out = (int32_t)value;
  return 1;
}

// new Relay(clientFd, owner, callback[, flags]): takes a duplicate of the accepted socket's
// descriptor (the caller then closes its own) and will call callback.call(owner, kind, leg,
// errno), in the pump's async context (ka_pump_js_scope). flags 1 (RELAY_OWN_FD): the descriptor
// was accepted by the pump's Acceptor and is taken as it is (the caller keeps it only if this
// throws). flags 2 (RELAY_READER), with a fifth argument, a Buffer (1 byte to 16 MiB): a reader
// of a duplicate of the descriptor, paused until start(): each read goes into that buffer and
// is told as callback.call(owner, 5 (data), 0, bytes read), to be copied before the call returns;
// end of stream and errors as a relay's. Its duplicate is closed by destroy(0), never a FIN or
// an RST of its own: the socket ends when its other descriptor (Node's) closes.
static napi_value relay_new(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value args[5];
  int32_t client_fd;
  napi_value self = ka_class_call(env, info, &argc, args, "Relay is a class: use new Relay(fd, owner, callback)", &client_fd);
  if (self == NULL) return NULL;
  int32_t flags = 0;
  if (argc > 3 && !int_in_range(env, args, argc, 3, 0, RELAY_OWN_FD | RELAY_READER, "Relay: flags must be 0 to 3", &flags)) return NULL;
  void* into = NULL;
  size_t into_len = 0;
  bool is_buffer = false;
  if ((flags & RELAY_READER) && (argc < 5 || napi_is_buffer(env, args[4], &is_buffer) != napi_ok || !is_buffer ||
                                 napi_get_buffer_info(env, args[4], &into, &into_len) != napi_ok || into_len == 0)) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "Relay: a reader reads into a Buffer");
    return NULL;
  }
  if (into_len > READER_MAX_BUFFER) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "Relay: a reader's buffer is 1 byte to 16 MiB");
    return NULL;
  }
  ka_pump_t* pump = ka_pump_init(env);
  if (pump == NULL) return NULL;
  int err;
  const char *syscall, *what;
  relay_t* r = ka_pump_relay_new(pump, env, client_fd, flags & RELAY_OWN_FD, &err, &syscall, &what);
  if (r == NULL) return ka_throw_errno(env, err, syscall, what);
  if (flags & RELAY_READER) {
    // Relaying from the start (its dead leg is drained like a relay's), paused until start().
    r->reader = 1;
    r->started = 1;
    r->paused = 1;
    r->into = into;
    r->into_len = into_len;
  }
  leg_t* client = &r->legs[LEG_CLIENT];
  if (((flags & RELAY_READER) && napi_create_reference(env, args[4], 1, &r->into_ref) != napi_ok) ||
      !ka_js_init(env, &r->js, args[1], args[2]) || napi_wrap(env, self, r, finalize, NULL, NULL) != napi_ok) {
    // Nothing in JavaScript knows this relay: it goes at once (no event can name it yet). A
    // descriptor of its own goes back to the caller, who is told by the exception.
    if (flags & RELAY_OWN_FD) ka_pump_release_leg(client);
    else ka_pump_close_leg(client, 0);
    ka_relay_release_if_done(r);
    ka_pump_relay_free(r);
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot create Relay");
    return NULL;
  }
  return self;
}

// The numeric address (IPv6 with a zone id too: fe80::1%eth0, ::1%lo, fe80::1%2) as a socket
// address, read as libuv reads it for net.connect. 0, or an errno: ENXIO for a zone that names
// no interface, EINVAL for an address that is not numeric.
static int socket_address(const char* address, int family, int port, struct sockaddr_storage* sa, socklen_t* sa_len) {
  memset(sa, 0, sizeof *sa);
  if (family == 4) {
    struct sockaddr_in* in4 = (struct sockaddr_in*)sa;
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &in4->sin_addr) != 1) return EINVAL;
    *sa_len = sizeof *in4;
    return 0;
  }
  struct sockaddr_in6* in6 = (struct sockaddr_in6*)sa;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons((uint16_t)port);
  char host[INET6_ADDRSTRLEN];
  const char* zone = strchr(address, '%');
  size_t host_len = zone ? (size_t)(zone - address) : strlen(address);
  if (host_len >= sizeof host) return EINVAL;
  memcpy(host, address, host_len);
  host[host_len] = '\0';
  if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) return EINVAL;
  if (zone != NULL) {
    zone++;
    char* end = NULL;
    unsigned long index = strtoul(zone, &end, 10);
    if (*zone == '\0' || *end != '\0') index = if_nametoindex(zone);
    if (index == 0 || index > UINT32_MAX) return ENXIO;
    in6->sin6_scope_id = (uint32_t)index;
  }
  *sa_len = sizeof *in6;
  return 0;
}

// connect(address, port, family[, flags, idleS, intervalS, count, userTimeoutMs]): opens the
// target leg, non-blocking; CONNECT or ERROR follows. flags (ka_pump.h): CONNECT_KEEPALIVE (1)
// sets these keepalive options on the leg once it connects, CONNECT_START (2) starts relaying
// then; what the session would otherwise ask for in two more calls at CONNECT. Returns null, or
// the errno name when it failed at once (an address this host cannot use: ENXIO for an IPv6 zone
// that names no interface).
static napi_value relay_connect(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value args[8];
  relay_t* r = unwrap(env, info, &argc, args);
  if (r == NULL) return NULL;
  // An IPv6 address with a zone id, and room to tell a longer one from it.
  char address[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  size_t address_len = 0;
  int32_t port, family;
  napi_valuetype type;
  if (argc < 3 || napi_typeof(env, args[0], &type) != napi_ok || type != napi_string ||
      napi_get_value_string_utf8(env, args[0], address, sizeof address, &address_len) != napi_ok) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "expected (address, port, family)");
    return NULL;
  }
  if (address_len >= sizeof address - 1) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "connect: address too long");
    return NULL;
  }
  if (!int_in_range(env, args, argc, 1, 1, 65535, "connect: port must be an integer from 1 to 65535", &port) ||
      !int_in_range(env, args, argc, 2, 4, 6, "connect: family must be 4 or 6", &family)) {
    return NULL;
  }
  if (family == 5) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "connect: family must be 4 or 6");
    return NULL;
  }
  int32_t flags = 0;
  int32_t keepalive[5] = {1, 0, 0, 0, 0};
  if (argc > 3 && !int_in_range(env, args, argc, 3, 0, CONNECT_KEEPALIVE | CONNECT_START, "connect: flags must be 0 to 3", &flags)) {
    return NULL;
  }
  // The kernel's own limits (TCP_KEEPIDLE and TCP_KEEPINTVL 1..32767 s, TCP_KEEPCNT 1..127).
  if ((flags & CONNECT_KEEPALIVE) &&
      (!int_in_range(env, args, argc, 4, 1, 32767, "connect: idle must be 1 to 32767 s", &keepalive[1]) ||
       !int_in_range(env, args, argc, 5, 1, 32767, "connect: interval must be 1 to 32767 s", &keepalive[2]) ||
       !int_in_range(env, args, argc, 6, 1, 127, "connect: count must be 1 to 127", &keepalive[3]) ||
       !int_in_range(env, args, argc, 7, 0, INT32_MAX, "connect: user timeout must be 0 or more ms", &keepalive[4]))) {
    return NULL;
  }
  leg_t* target = &r->legs[LEG_TARGET];
  if (target->fd >= 0 || r->legs[LEG_CLIENT].fd < 0 || r->started) {
    napi_throw_error(env, "KA_NATIVE_STATE", "connect: target leg already open, or relay closed or started");
    return NULL;
  }
  // A new attempt after a failed one (the next address of the target's name) starts clean.
  ka_pump_reset_target(r);
  r->connect_flags = flags;
  memcpy(r->target_keepalive, keepalive, sizeof keepalive);
  struct sockaddr_storage sa;
  socklen_t sa_len = 0;
  int err = socket_address(address, family, port, &sa, &sa_len);
  if (err == 0) err = ka_pump_connect(r, &sa, sa_len);
  napi_value result;
  if (err == 0) {
    if (napi_get_null(env, &result) != napi_ok) return NULL;
    return result;
  }
  if (napi_create_string_utf8(env, ka_errno_name(err), NAPI_AUTO_LENGTH, &result) != napi_ok) return NULL;
  return result;
}

// start(): both legs begin relaying (after CONNECT); a reader reads (again).
static napi_value relay_start(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  relay_t* r = unwrap(env, info, &argc, NULL);
  if (r == NULL) return NULL;
  ka_pump_start(r);
  return NULL;
}

// pause(): a reader stops reading until start() (what arrives waits in the kernel).
static napi_value relay_pause(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  relay_t* r = unwrap(env, info, &argc, NULL);
  if (r == NULL) return NULL;
  if (!r->reader) {
    napi_throw_error(env, "KA_NATIVE_STATE", "pause: only a reader pauses");
    return NULL;
  }
  ka_pump_pause(r);
  return NULL;
}

static napi_value make_bool(napi_env env, int value) {
  napi_value result;
  if (napi_get_boolean(env, value, &result) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "napi_get_boolean failed");
    return NULL;
  }
  return result;
}

// end(leg): a FIN to that leg's peer once its queue has drained. True when the leg closed
// at once (its stream had already ended the other way).
static napi_value relay_end(napi_env env, napi_callback_info info) {
  leg_t* leg = leg_of_call(env, info);
  int closed = ka_pump_end(leg);
  if (closed) ka_relay_release_if_done(leg->relay);
  return make_bool(env, closed);
}

static napi_value close_with(napi_env env, napi_callback_info info, int reset) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  if (leg->relay->reader && !reset) {
    // A reader's socket lives on (Node's): its duplicate leaves the epoll set before the close,
    // or the set would go on reporting the socket's events (for a freed slot, dropped) and keep
    // the registration (a new duplicate given the same number could not be added).
    int fd = ka_pump_release_leg(leg);
    if (fd >= 0) close(fd);
    ka_relay_release_if_done(leg->relay);
    return NULL;
  }
  ka_pump_close_leg(leg, reset && !leg->connecting);
  ka_relay_release_if_done(leg->relay);
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
  napi_value result, v[3];
  if (napi_create_array_with_length(env, 3, &result) != napi_ok ||
      napi_create_double(env, (double)ka_pump_queued(leg), &v[0]) != napi_ok ||
      napi_get_boolean(env, leg->fin_wanted, &v[1]) != napi_ok || napi_get_boolean(env, leg->fin_sent, &v[2]) != napi_ok ||
      napi_set_element(env, result, 0, v[0]) != napi_ok || napi_set_element(env, result, 1, v[1]) != napi_ok ||
      napi_set_element(env, result, 2, v[2]) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot build state");
    return NULL;
  }
  return result;
}

// One number about the leg named by the single argument.
static napi_value leg_number(napi_env env, napi_callback_info info, int bytes) {
  leg_t* leg = leg_of_call(env, info);
  if (leg == NULL) return NULL;
  napi_value result;
  if (napi_create_double(env, bytes ? leg->bytes_read : (double)leg->fd, &result) != napi_ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "napi_create_double failed");
    return NULL;
  }
  return result;
}

// fd(leg) -> the leg's descriptor, -1 once closed (for socket-option calls).
static napi_value relay_fd(napi_env env, napi_callback_info info) { return leg_number(env, info, 0); }

// bytes(leg) -> bytes read from that leg so far.
static napi_value relay_bytes(napi_env env, napi_callback_info info) { return leg_number(env, info, 1); }

// detach() -> null when the relay cannot be handed over (not relaying, a leg connecting, closed,
// failed or being drained); else one flat array, per leg (client, target): [clientFd, targetFd,
// clientFlags, targetFlags, bytes read from the client, from the target, bytes held for the
// client, for the target] where flags are adopt()'s (ADOPT_*) and the bytes held a Buffer, or
// null when there are none. Flat, and no Buffer for an empty queue: an upgrade detaches every
// session, and each object, array and buffer made here is a call into V8. The legs leave the
// pump without a close (no FIN, no RST): the descriptors are the caller's to pass on and close;
// the relay reports nothing more.
static napi_value relay_detach(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  relay_t* r = unwrap(env, info, &argc, NULL);
  if (r == NULL) return NULL;
  int fds[2];
  napi_value result;
  if (!ka_pump_detach(r, fds)) {
    if (napi_get_null(env, &result) != napi_ok) return NULL;
    return result;
  }
  int ok = napi_create_array_with_length(env, 8, &result) == napi_ok;
  for (int i = 0; ok && i < 2; i++) {
    leg_t* leg = &r->legs[i];
    napi_value v[4];
    size_t len = ka_pump_queued(leg);
    int flags = (leg->fin_wanted ? ADOPT_END_REQUESTED : 0) | (leg->fin_sent ? ADOPT_FIN_SENT : 0) | (leg->read_eof ? ADOPT_END_RECEIVED : 0);
    void* data = NULL;
    ok = napi_create_int32(env, fds[i], &v[0]) == napi_ok && napi_create_int32(env, flags, &v[1]) == napi_ok &&
         napi_create_double(env, leg->bytes_read, &v[2]) == napi_ok &&
         (len > 0 ? napi_create_buffer_copy(env, len, leg->queue + leg->queue_off, &data, &v[3]) : napi_get_null(env, &v[3])) == napi_ok;
    for (int a = 0; ok && a < 4; a++) ok = napi_set_element(env, result, (uint32_t)(a * 2 + i), v[a]) == napi_ok;
  }
  ka_pump_drop_queues(r);
  ka_relay_release_if_done(r);
  if (!ok) {
    // The descriptors are out of the pump either way; closing them here would end the sessions.
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot build the detached state");
    return NULL;
  }
  return result;
}

// adopt(targetFd, [clientQueued, targetQueued], [clientFlags, targetFlags], [bytesFromClient,
// bytesFromTarget]): the target leg is a connected socket handed over (a duplicate is taken,
// the caller closes its own; a relay made with RELAY_OWN_FD takes it as it is, and if this
// throws both descriptors are the caller's again, untouched), each leg gets the bytes the old process held for it and its
// half-close state (flags: 1 FIN asked for, 2 FIN sent, 4 end of stream received). Then start().
static napi_value relay_adopt(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value args[4];
  relay_t* r = unwrap(env, info, &argc, args);
  if (r == NULL) return NULL;
  int32_t target_fd;
  if (!int_in_range(env, args, argc, 0, 0, INT32_MAX, "adopt: fd must be an integer from 0 to 2**31-1", &target_fd)) return NULL;
  const char* queued[2] = {NULL, NULL};
  size_t queued_len[2] = {0, 0};
  int flags[2] = {0, 0};
  double bytes[2] = {0, 0};
  for (int i = 0; i < 2; i++) {
    napi_value q, f, b;
    void* data = NULL;
    bool is_buffer = false;
    int32_t flag;
    if (argc < 4 || napi_get_element(env, args[1], (uint32_t)i, &q) != napi_ok ||
        napi_is_buffer(env, q, &is_buffer) != napi_ok || !is_buffer ||
        napi_get_buffer_info(env, q, &data, &queued_len[i]) != napi_ok ||
        napi_get_element(env, args[2], (uint32_t)i, &f) != napi_ok || napi_get_value_int32(env, f, &flag) != napi_ok ||
        napi_get_element(env, args[3], (uint32_t)i, &b) != napi_ok || napi_get_value_double(env, b, &bytes[i]) != napi_ok) {
      napi_throw_type_error(env, "KA_NATIVE_ARG", "expected (fd, [Buffer, Buffer], [flags, flags], [bytes, bytes])");
      return NULL;
    }
    queued[i] = data;
    flags[i] = flag;
  }
  if (r->legs[LEG_TARGET].fd >= 0 || r->legs[LEG_CLIENT].fd < 0 || r->started) {
    napi_throw_error(env, "KA_NATIVE_STATE", "adopt: target leg already open, or relay closed or started");
    return NULL;
  }
  int err = ka_pump_adopt(r, target_fd, queued, queued_len, flags, bytes);
  if (err != 0) return ka_throw_errno(env, err, "adopt", "target");
  return NULL;
}

int ka_relay_init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      KA_METHOD("connect", relay_connect),
      KA_METHOD("start", relay_start),
      KA_METHOD("pause", relay_pause),
      KA_METHOD("end", relay_end),
      KA_METHOD("reset", relay_reset),
      KA_METHOD("destroy", relay_destroy),
      KA_METHOD("state", relay_state),
      KA_METHOD("bytes", relay_bytes),
      KA_METHOD("fd", relay_fd),
      KA_METHOD("detach", relay_detach),
      KA_METHOD("adopt", relay_adopt),
  };
  return ka_define_class(env, exports, "Relay", relay_new, methods, sizeof methods / sizeof methods[0]);
}
