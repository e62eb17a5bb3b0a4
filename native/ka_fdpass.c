// Descriptor passing for the upgrade hand-over (src/upgrade/): file descriptors travel with a
// payload over a Unix socket as SCM_RIGHTS ancillary data, so the new process receives the very
// sockets the old one holds (the TCP state stays in the kernel). Node's net module cannot send
// descriptors it did not wrap, nor receive them outside its own IPC channel, so this lives here.
//
//   seqpacketPair() -> [fd, fd]        a connected AF_UNIX SOCK_SEQPACKET pair (close-on-exec):
//                                      each message arrives whole, with its descriptors
//   sendFds(sock, payload, fds, timeoutMs) -> undefined
//   recvFds(sock, maxBytes, timeoutMs) -> {payload: Buffer, fds: number[]} | null (peer closed)
//   closeFd(fd)                        for received descriptors nobody adopted
//   moveFd(from, to)                   dup2(from, to), then close(from): the new process puts the
//                                      real stderr it inherited back on descriptor 2
//   dupFd(fd) -> fd                    a close-on-exec duplicate: a socket Node owns is handed over
//                                      (and wrapped again) through a copy, Node closing its own
//
// Every failure throws Error{code: errno name, syscall}; a message whose payload or descriptors
// did not fit (MSG_TRUNC, MSG_CTRUNC) is refused whole, and the descriptors that did arrive are
// closed, so nothing half-received is ever used and no descriptor leaks. Both calls wait for the
// socket with poll(), at most timeoutMs, and never longer: the caller's bound is the last word.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

#include "ka_native.h"

// SCM_MAX_FD in the kernel: more descriptors than this in one message fail with EINVAL.
#define FDPASS_MAX_FDS 253
// A payload larger than this is refused before any system call (the socket's send buffer is
// about 208 KiB by default; the caller splits its state into messages well under that).
#define FDPASS_MAX_PAYLOAD (1 << 20)

static napi_value throw_arg(napi_env env, const char* message) {
  napi_throw_type_error(env, "KA_NATIVE_ARG", message);
  return NULL;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Waits until `fd` is ready for `events`, at most until `deadline` (CLOCK_MONOTONIC ms).
// Returns 0 when ready, else an errno (ETIMEDOUT when the time ran out).
static int wait_ready(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int n = poll(&p, 1, (int)left);
    if (n > 0) return 0;  // ready, or an error the next call reports
    if (n == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

static napi_value seqpacket_pair(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return ka_throw_errno(env, errno, "socketpair", "SOCK_SEQPACKET");
  napi_value out, a, b;
  if (napi_create_array_with_length(env, 2, &out) != napi_ok || napi_create_int32(env, fds[0], &a) != napi_ok ||
      napi_create_int32(env, fds[1], &b) != napi_ok || napi_set_element(env, out, 0, a) != napi_ok ||
      napi_set_element(env, out, 1, b) != napi_ok) {
    close(fds[0]);
    close(fds[1]);
    napi_throw_error(env, "KA_NATIVE_NAPI", "seqpacketPair: cannot build the result");
    return NULL;
  }
  return out;
}

static napi_value send_fds(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value args[4];
  int32_t sock, timeout;
  void* data = NULL;
  size_t length = 0;
  bool is_buffer = false, is_array = false;
  uint32_t count = 0;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 4) return throw_arg(env, "expected (sock, payload, fds, timeoutMs)");
  if (!ka_get_int_arg(env, args, argc, 0, &sock) || !ka_get_int_arg(env, args, argc, 3, &timeout)) return NULL;
  if (napi_is_buffer(env, args[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, args[1], &data, &length) != napi_ok)
    return throw_arg(env, "sendFds: payload must be a Buffer");
  if (length == 0 || length > FDPASS_MAX_PAYLOAD) return throw_arg(env, "sendFds: payload must be 1 byte to 1 MiB");
  if (napi_is_array(env, args[2], &is_array) != napi_ok || !is_array || napi_get_array_length(env, args[2], &count) != napi_ok)
    return throw_arg(env, "sendFds: fds must be an array of descriptors");
  if (count > FDPASS_MAX_FDS) return throw_arg(env, "sendFds: at most 253 descriptors per message");
  int fds[FDPASS_MAX_FDS];
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    if (napi_get_element(env, args[2], i, &element) != napi_ok || !ka_get_int_arg(env, &element, 1, 0, &fds[i])) return NULL;
    if (fds[i] < 0) return throw_arg(env, "sendFds: a descriptor is negative");
  }
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = data, .iov_len = length};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
  }
  int64_t deadline = now_ms() + (timeout < 0 ? 0 : timeout);
  for (;;) {
    ssize_t sent = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0) {
      // A SOCK_SEQPACKET message goes whole or not at all; a stream socket could split it.
      if ((size_t)sent != length) return ka_throw_errno(env, EMSGSIZE, "sendmsg", "SCM_RIGHTS");
      return NULL;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return ka_throw_errno(env, errno, "sendmsg", "SCM_RIGHTS");
    int err = wait_ready(sock, POLLOUT, deadline);
    if (err != 0) return ka_throw_errno(env, err, "sendmsg", "SCM_RIGHTS");
  }
}

static void close_received(struct msghdr* msg) {
  for (struct cmsghdr* c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int fds[FDPASS_MAX_FDS];
    memcpy(fds, CMSG_DATA(c), sizeof(int) * (n > FDPASS_MAX_FDS ? FDPASS_MAX_FDS : n));
    for (size_t i = 0; i < n && i < FDPASS_MAX_FDS; i++) close(fds[i]);
  }
}

static napi_value recv_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  int32_t sock, max_bytes, timeout;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 3) return throw_arg(env, "expected (sock, maxBytes, timeoutMs)");
  if (!ka_get_int_arg(env, args, argc, 0, &sock) || !ka_get_int_arg(env, args, argc, 1, &max_bytes) ||
      !ka_get_int_arg(env, args, argc, 2, &timeout))
    return NULL;
  if (max_bytes < 1 || max_bytes > FDPASS_MAX_PAYLOAD) return throw_arg(env, "recvFds: maxBytes must be 1 to 1 MiB");
  char* data = malloc((size_t)max_bytes);
  if (data == NULL) return ka_throw_errno(env, ENOMEM, "recvmsg", "SCM_RIGHTS");
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = (size_t)max_bytes};
  struct msghdr msg;
  int64_t deadline = now_ms() + (timeout < 0 ? 0 : timeout);
  ssize_t got;
  for (;;) {
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    got = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got >= 0) break;
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) err = wait_ready(sock, POLLIN, deadline);
    if (err != 0) {
      free(data);
      return ka_throw_errno(env, err, "recvmsg", "SCM_RIGHTS");
    }
  }
  if (got == 0 && msg.msg_controllen == 0) {
    free(data);  // the peer closed its end
    napi_value null_value;
    napi_get_null(env, &null_value);
    return null_value;
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    close_received(&msg);
    free(data);
    return ka_throw_errno(env, EMSGSIZE, "recvmsg", (msg.msg_flags & MSG_CTRUNC) ? "SCM_RIGHTS (descriptors cut off)" : "SCM_RIGHTS (payload cut off)");
  }
  int fds[FDPASS_MAX_FDS];
  size_t count = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    if (count + n > FDPASS_MAX_FDS) n = FDPASS_MAX_FDS - count;  // cannot happen: the buffer holds 253
    memcpy(fds + count, CMSG_DATA(c), sizeof(int) * n);
    count += n;
  }
  napi_value out, payload, list, value;
  void* copy = NULL;
  int ok = napi_create_object(env, &out) == napi_ok && napi_create_buffer(env, (size_t)got, &copy, &payload) == napi_ok &&
           napi_create_array_with_length(env, count, &list) == napi_ok;
  if (ok && got > 0) memcpy(copy, data, (size_t)got);
  for (size_t i = 0; ok && i < count; i++) ok = napi_create_int32(env, fds[i], &value) == napi_ok && napi_set_element(env, list, (uint32_t)i, value) == napi_ok;
  free(data);
  if (!ok || napi_set_named_property(env, out, "payload", payload) != napi_ok || napi_set_named_property(env, out, "fds", list) != napi_ok) {
    for (size_t i = 0; i < count; i++) close(fds[i]);
    napi_throw_error(env, "KA_NATIVE_NAPI", "recvFds: cannot build the result");
    return NULL;
  }
  return out;
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || !ka_get_int_arg(env, args, argc, 0, &fd)) return NULL;
  if (close(fd) != 0 && errno != EINTR) return ka_throw_errno(env, errno, "close", "fd");
  return NULL;
}

static napi_value move_fd(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  int32_t from, to;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || !ka_get_int_arg(env, args, argc, 0, &from) ||
      !ka_get_int_arg(env, args, argc, 1, &to))
    return NULL;
  if (from == to) return throw_arg(env, "moveFd: from and to are the same descriptor");
  int r;
  do {
    r = dup2(from, to);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ka_throw_errno(env, errno, "dup2", "fd");
  close(from);
  return NULL;
}

static napi_value dup_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || !ka_get_int_arg(env, args, argc, 0, &fd)) return NULL;
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return ka_throw_errno(env, errno, "fcntl", "fd");
  napi_value out;
  if (napi_create_int32(env, copy, &out) != napi_ok) {
    close(copy);
    return NULL;
  }
  return out;
}

int ka_fdpass_init(napi_env env, napi_value exports) {
  static const struct {
    const char* name;
    napi_callback fn;
  } functions[] = {
      {"seqpacketPair", seqpacket_pair},
      {"sendFds", send_fds},
      {"recvFds", recv_fds},
      {"closeFd", close_fd},
      {"moveFd", move_fd},
      {"dupFd", dup_fd},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, functions[i].name, fn) != napi_ok)
      return 0;
  }
  return 1;
}
