// sd_notify: one datagram to the Unix socket systemd names in NOTIFY_SOCKET (READY=1,
// STOPPING=1, STATUS=...). Node's dgram module speaks only UDP, so the sendto lives here.
//
//   notify(path, message) -> undefined, or throws Error{code: errno name, syscall: "sendto"}
//
// A path starting with '@' names a socket in the abstract namespace (the '@' becomes the
// leading NUL byte, as in sd_notify(3)). The caller validates the text; this only sends it.

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <node_api.h>

#include "ka_native.h"

// Path and message are copied into fixed buffers: a socket path cannot exceed sun_path, and a
// notify message is a few short KEY=VALUE lines.
#define NOTIFY_MAX_MESSAGE 4096

static int read_string(napi_env env, napi_value value, char* out, size_t size, size_t* len) {
  // One byte more than allowed is read, so that a string too long is told from one that fits.
  return napi_get_value_string_utf8(env, value, out, size, len) == napi_ok && *len < size - 1;
}

static napi_value notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  struct sockaddr_un addr;
  char path[sizeof addr.sun_path + 2];
  char message[NOTIFY_MAX_MESSAGE + 2];
  size_t path_len = 0, message_len = 0;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 2 ||
      !read_string(env, args[0], path, sizeof path, &path_len) ||
      !read_string(env, args[1], message, sizeof message, &message_len)) {
    napi_throw_type_error(env, "KA_NATIVE_ARG", "expected (socket path up to 108 bytes, message up to 4096 bytes)");
    return NULL;
  }
  if (path_len == 0 || path_len > sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    napi_throw_range_error(env, "KA_NATIVE_ARG", "NOTIFY_SOCKET must be an absolute path or start with @");
    return NULL;
  }
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path, path_len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  // Abstract names are exactly path_len bytes long (no terminating NUL); a filesystem path
  // may use the whole of sun_path.
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ka_throw_errno(env, errno, "socket", "NOTIFY_SOCKET");
  ssize_t sent;
  do {
    sent = sendto(fd, message, message_len, MSG_NOSIGNAL, (struct sockaddr*)&addr, addr_len);
  } while (sent < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (sent < 0) return ka_throw_errno(env, err, "sendto", "NOTIFY_SOCKET");
  if ((size_t)sent != message_len) return ka_throw_errno(env, EMSGSIZE, "sendto", "NOTIFY_SOCKET");
  return NULL;
}

int ka_notify_init(napi_env env, napi_value exports) {
  napi_value fn;
  return napi_create_function(env, "notify", NAPI_AUTO_LENGTH, notify, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, "notify", fn) == napi_ok;
}
