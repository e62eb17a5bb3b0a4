// Socket options Node cannot set: TCP_KEEPINTVL, TCP_KEEPCNT and TCP_USER_TIMEOUT
// (libuv only sets TCP_KEEPIDLE and forces interval 1 s / count 10) and SO_OOBINLINE, plus
// read-back with getsockopt (those, and TCP_NODELAY), TCP_INFO, the send queue and a socket's
// addresses, so that what the proxy claims can be checked. src/socket-control.ts uses these and
// lists every option ka-proxy sets anywhere.
//
// Every entry point takes a file descriptor and returns or throws; a bad fd or a
// value the kernel refuses becomes a JS error carrying the errno name as `code`.
// Range checks live in the TypeScript wrapper; the kernel is the last word here.

#include <errno.h>
#include <string.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif
#include <node_api.h>

#include "ka_native.h"

#define CHECK_NAPI(env, call)                                     \
  do {                                                            \
    if ((call) != napi_ok) {                                      \
      napi_throw_error((env), "KA_NATIVE_NAPI", #call " failed"); \
      return NULL;                                                \
    }                                                             \
  } while (0)

typedef struct {
  int level;
  int name;
  const char* label;
} sockopt_t;

// Order matters for set(): SO_KEEPALIVE first so a refused enable stops the rest.
enum { OPT_KEEPALIVE, OPT_IDLE, OPT_INTERVAL, OPT_COUNT, OPT_USER_TIMEOUT, OPT_COUNT_ALL };

// An option the platform's headers lack is listed with name -1 and reported as ENOPROTOOPT.
#define TCP_OPT(name) {IPPROTO_TCP, name, #name}
#ifndef TCP_KEEPIDLE
#define TCP_KEEPIDLE -1
#endif
#ifndef TCP_KEEPINTVL
#define TCP_KEEPINTVL -1
#endif
#ifndef TCP_KEEPCNT
#define TCP_KEEPCNT -1
#endif
#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT -1
#endif

static const sockopt_t OPTIONS[OPT_COUNT_ALL] = {
    {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"},
    TCP_OPT(TCP_KEEPIDLE),
    TCP_OPT(TCP_KEEPINTVL),
    TCP_OPT(TCP_KEEPCNT),
    TCP_OPT(TCP_USER_TIMEOUT),
};

int ka_set_keepalive(int fd, const int32_t values[5], const char** label) {
  for (int opt = 0; opt < OPT_COUNT_ALL; opt++) {
    int value = values[opt];
    if (opt != OPT_KEEPALIVE && value < 0) continue;
    if (opt == OPT_KEEPALIVE) value = value ? 1 : 0;
    *label = OPTIONS[opt].label;
    if (OPTIONS[opt].name < 0) return ENOPROTOOPT;
    if (setsockopt(fd, OPTIONS[opt].level, OPTIONS[opt].name, &value, sizeof value) != 0) return errno;
  }
  return 0;
}

// setKeepalive(fd, enable, idleS, intervalS, count, userTimeoutMs)
// A negative value for idle/interval/count/userTimeout leaves that option untouched.
static napi_value set_keepalive(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value args[6];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, args, NULL, NULL));
  int32_t values[OPT_COUNT_ALL + 1];
  for (size_t i = 0; i < 6; i++) {
    if (!ka_get_int_arg(env, args, argc, i, &values[i])) return NULL;
  }
  const char* label;
  int err = ka_set_keepalive(values[0], values + 1, &label);
  return err != 0 ? ka_throw_errno(env, err, "setsockopt", label) : NULL;
}

static int set_int_property(napi_env env, napi_value obj, const char* key, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) != napi_ok) return 0;
  return napi_set_named_property(env, obj, key, v) == napi_ok;
}

// getKeepalive(fd) -> { enabled, idle, interval, count, userTimeoutMs }; an option the
// platform lacks reads as -1.
static napi_value get_keepalive(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!ka_get_fd_arg(env, info, &fd)) return NULL;
  static const char* keys[OPT_COUNT_ALL] = {"enabled", "idle", "interval", "count", "userTimeoutMs"};
  napi_value result;
  CHECK_NAPI(env, napi_create_object(env, &result));
  for (int opt = 0; opt < OPT_COUNT_ALL; opt++) {
    int value = -1;
    if (OPTIONS[opt].name >= 0) {
      socklen_t len = sizeof value;
      if (getsockopt(fd, OPTIONS[opt].level, OPTIONS[opt].name, &value, &len) != 0)
        return ka_throw_errno(env, errno, "getsockopt", OPTIONS[opt].label);
    }
    if (opt == OPT_KEEPALIVE) {
      napi_value b;
      CHECK_NAPI(env, napi_get_boolean(env, value > 0, &b));
      CHECK_NAPI(env, napi_set_named_property(env, result, keys[opt], b));
    } else if (!set_int_property(env, result, keys[opt], value)) {
      napi_throw_error(env, "KA_NATIVE_NAPI", "cannot build result");
      return NULL;
    }
  }
  return result;
}

// tcpInfo(fd) -> the TCP_INFO fields an operator looks at to judge a connection's health.
// Times are in microseconds (rtt) or milliseconds (last_*), as the kernel reports them.
static napi_value tcp_info(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!ka_get_fd_arg(env, info, &fd)) return NULL;
#ifdef TCP_INFO
  struct tcp_info ti;
  memset(&ti, 0, sizeof ti);
  socklen_t len = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return ka_throw_errno(env, errno, "getsockopt", "TCP_INFO");
  napi_value result;
  CHECK_NAPI(env, napi_create_object(env, &result));
  int ok = set_int_property(env, result, "state", ti.tcpi_state) &&
           set_int_property(env, result, "retransmits", ti.tcpi_retransmits) &&
           set_int_property(env, result, "probes", ti.tcpi_probes) &&
           set_int_property(env, result, "backoff", ti.tcpi_backoff) &&
           set_int_property(env, result, "rtoUs", ti.tcpi_rto) &&
           set_int_property(env, result, "unacked", ti.tcpi_unacked) &&
           set_int_property(env, result, "lastDataSentMs", ti.tcpi_last_data_sent) &&
           set_int_property(env, result, "lastDataRecvMs", ti.tcpi_last_data_recv) &&
           set_int_property(env, result, "lastAckRecvMs", ti.tcpi_last_ack_recv) &&
           set_int_property(env, result, "rttUs", ti.tcpi_rtt) &&
           set_int_property(env, result, "rttvarUs", ti.tcpi_rttvar) &&
           set_int_property(env, result, "sndCwnd", ti.tcpi_snd_cwnd) &&
           set_int_property(env, result, "totalRetrans", ti.tcpi_total_retrans);
  if (!ok) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot build result");
    return NULL;
  }
  return result;
#else
  return ka_throw_errno(env, ENOPROTOOPT, "getsockopt", "TCP_INFO");
#endif
}

// sendQueueBytes(fd) -> bytes written but not yet acknowledged by the peer (SIOCOUTQ).
// Decides whether a reset would discard data the peer has not received yet.
static napi_value send_queue_bytes(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!ka_get_fd_arg(env, info, &fd)) return NULL;
#ifdef SIOCOUTQ
  int queued = 0;
  if (ioctl(fd, SIOCOUTQ, &queued) != 0) return ka_throw_errno(env, errno, "ioctl", "SIOCOUTQ");
  napi_value result;
  CHECK_NAPI(env, napi_create_int32(env, queued, &result));
  return result;
#else
  return ka_throw_errno(env, ENOPROTOOPT, "ioctl", "SIOCOUTQ");
#endif
}

// setUrgentInline(fd): SO_OOBINLINE, so that urgent (out-of-band) data stays in the stream as
// a byte like any other; a reader that never asks for MSG_OOB (Node) would drop it otherwise.
// Set on a listening socket, accepted sockets inherit it.
static napi_value set_urgent_inline(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!ka_get_fd_arg(env, info, &fd)) return NULL;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof one) != 0)
    return ka_throw_errno(env, errno, "setsockopt", "SO_OOBINLINE");
  return NULL;
}

// setNotSentLowat(fd, bytes): TCP_NOTSENT_LOWAT, so that the kernel takes no more than `bytes`
// not yet sent on this socket; what is written beyond waits in the writer's queue, where it can
// still be ordered (a pair link serves its sessions in turn from there: src/pair/link.ts).
static napi_value set_not_sent_lowat(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, args, NULL, NULL));
  int32_t fd, bytes;
  if (!ka_get_int_arg(env, args, argc, 0, &fd) || !ka_get_int_arg(env, args, argc, 1, &bytes)) return NULL;
#ifdef TCP_NOTSENT_LOWAT
  if (setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &bytes, sizeof bytes) != 0)
    return ka_throw_errno(env, errno, "setsockopt", "TCP_NOTSENT_LOWAT");
  return NULL;
#else
  return ka_throw_errno(env, ENOPROTOOPT, "setsockopt", "TCP_NOTSENT_LOWAT");
#endif
}

// getSocketFlags(fd) -> {noDelay, urgentInline, notSentLowat}: TCP_NODELAY and SO_OOBINLINE as
// the kernel has them, so that tests and `doctor` can check the other options ka-proxy sets on
// every leg; and TCP_NOTSENT_LOWAT in bytes (-1 where the platform lacks it).
static napi_value get_socket_flags(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!ka_get_fd_arg(env, info, &fd)) return NULL;
  static const struct {
    int level;
    int name;
    const char* label;
    const char* key;
  } flags[] = {{IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", "noDelay"}, {SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE", "urgentInline"}};
  napi_value result;
  CHECK_NAPI(env, napi_create_object(env, &result));
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
    int value = 0;
    socklen_t len = sizeof value;
    if (getsockopt(fd, flags[i].level, flags[i].name, &value, &len) != 0)
      return ka_throw_errno(env, errno, "getsockopt", flags[i].label);
    napi_value b;
    CHECK_NAPI(env, napi_get_boolean(env, value != 0, &b));
    CHECK_NAPI(env, napi_set_named_property(env, result, flags[i].key, b));
  }
  int lowat = -1;
#ifdef TCP_NOTSENT_LOWAT
  socklen_t len = sizeof lowat;
  if (getsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, &len) != 0)
    return ka_throw_errno(env, errno, "getsockopt", "TCP_NOTSENT_LOWAT");
#endif
  if (!set_int_property(env, result, "notSentLowat", lowat)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot build result");
    return NULL;
  }
  return result;
}

int ka_push_address(napi_env env, napi_value array, uint32_t at, const struct sockaddr_storage* sa) {
  char host[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (sa->ss_family == AF_INET) {
    const struct sockaddr_in* in4 = (const struct sockaddr_in*)sa;
    inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
    port = ntohs(in4->sin_port);
  } else if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6* in6 = (const struct sockaddr_in6*)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  napi_value h, p;
  return napi_create_string_utf8(env, host, NAPI_AUTO_LENGTH, &h) == napi_ok &&
         napi_create_int32(env, port, &p) == napi_ok && napi_set_element(env, array, at, h) == napi_ok &&
         napi_set_element(env, array, at + 1, p) == napi_ok;
}

// socketAddresses(fd) -> [localHost, localPort, remoteHost, remotePort], for sockets Node does
// not hold (the native pump's).
static napi_value socket_addresses(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!ka_get_fd_arg(env, info, &fd)) return NULL;
  struct sockaddr_storage local, remote;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr*)&local, &len) != 0) return ka_throw_errno(env, errno, "getsockname", "local");
  len = sizeof remote;
  if (getpeername(fd, (struct sockaddr*)&remote, &len) != 0) return ka_throw_errno(env, errno, "getpeername", "remote");
  napi_value result;
  CHECK_NAPI(env, napi_create_array_with_length(env, 4, &result));
  if (!ka_push_address(env, result, 0, &local) || !ka_push_address(env, result, 2, &remote)) {
    napi_throw_error(env, "KA_NATIVE_NAPI", "cannot build result");
    return NULL;
  }
  return result;
}

int ka_sockopt_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setKeepalive", NULL, set_keepalive, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getKeepalive", NULL, get_keepalive, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tcpInfo", NULL, tcp_info, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendQueueBytes", NULL, send_queue_bytes, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setUrgentInline", NULL, set_urgent_inline, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setNotSentLowat", NULL, set_not_sent_lowat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getSocketFlags", NULL, get_socket_flags, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketAddresses", NULL, socket_addresses, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props) == napi_ok;
}
