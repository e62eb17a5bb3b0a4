// The performance bench's load generator and servers, one small C program compiled at bench
// time with the machine's cc: a generator written in Node spends more CPU per byte and per round
// trip than the relays it is meant to saturate. Every mode runs in one thread with epoll.
//
//   loadgen serve                          sink, echo and source servers on 127.0.0.1 (ports chosen
//                                          by the kernel); prints "ready <sink> <echo> <source>"
//   loadgen bulk HOST PORT STREAMS BYTES   sends BYTES, split over STREAMS connections, to the sink
//   loadgen down HOST PORT STREAMS BYTES   receives BYTES, split over STREAMS connections, from the
//                                          source: each stream asks for its share with its length
//   loadgen rr HOST PORT CONNS SIZE WARMUP SECONDS
//                                          SIZE-byte ping-pong on CONNS connections to the echo
//   loadgen open HOST PORT COUNT WINDOW    opens COUNT sessions, at most WINDOW at a time, each
//                                          proven end to end by a 1-byte echo; holds them: a line
//                                          "check" on stdin echoes 1 byte on each again and counts
//                                          those that answered; "close" (or EOF) resets them all
//   loadgen trace HOST PORT SIZE           SIZE-byte ping-pong on one connection to the echo, every
//                                          round trip kept, until "stop FROM TO" on stdin (two
//                                          CLOCK_MONOTONIC times in ns, the bench's own clock):
//                                          the median before FROM, the longest round trip that
//                                          overlaps FROM..TO (one in flight at the stop gets 5 s
//                                          more, then counts as unanswered)
//   loadgen stream HOST PORT CONNS RATE    CONNS connections to the echo, each sending RATE bytes/s
//                                          of its own pseudo-random stream and checking every
//                                          byte that comes back, until "stop" on stdin: then it
//                                          stops sending, waits for the rest, and reports
//
// Client modes print one JSON object per line on stdout. A bulk stream starts with its length
// (8 bytes, little-endian); when that many bytes have arrived the sink answers with the number it
// received, in the same form: the client stops its clock when that answer is back, so a relay's
// buffers cannot flatter it, and the count checks that every byte crossed. No half-close is
// needed (nginx and a naive pipe() relay close both directions on the first FIN).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_BUF (1 << 20)
#define MAX_EVENTS 256

static char io_buf[IO_BUF];

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/** Up to `want` descriptors, within the hard limit (raising that needs CAP_SYS_RESOURCE). */
static rlim_t raise_nofile(rlim_t want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) die("getrlimit");
  if (rl.rlim_cur >= want) return rl.rlim_cur;
  rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit RLIMIT_NOFILE");
  return rl.rlim_cur;
}

static void set_int(int fd, int level, int opt, int value) {
  setsockopt(fd, level, opt, &value, sizeof value);
}

static struct sockaddr_in address(const char *host, const char *port) {
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "loadgen: not an IPv4 address: %s\n", host);
    exit(2);
  }
  return sa;
}

static int connect_blocking(const struct sockaddr_in *sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) die("connect");
  set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  return fd;
}

static void set_nonblocking(int fd, int on) {
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

static void watch(int ep, int op, int fd, uint32_t events) {
  struct epoll_event ev = { .events = events, .data.fd = fd };
  if (epoll_ctl(ep, op, fd, &ev) != 0) die("epoll_ctl");
}

static int wait_events(int ep, struct epoll_event *events, int timeout_ms) {
  for (;;) {
    int n = epoll_wait(ep, events, MAX_EVENTS, timeout_ms);
    if (n >= 0) return n;
    if (errno != EINTR) die("epoll_wait");
  }
}

/** Closes with an RST: no TIME_WAIT left behind by thousands of sessions. */
static void reset_close(int fd) {
  struct linger lg = { .l_onoff = 1, .l_linger = 0 };
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

// ---------------------------------------------------------------------------------------- serve

enum kind { NONE, SINK_LISTEN, ECHO_LISTEN, SOURCE_LISTEN, SINK, ECHO, SOURCE };

struct conn {
  enum kind kind;
  unsigned char header[8];  // sink, source: the stream's length, as it arrives
  int header_len;
  uint64_t bytes;   // sink: received so far, after the header
  uint64_t to_send; // source: what is left of the length asked for
  int answered;
  char *pending;    // echo: bytes the client has not taken yet
  size_t pending_len;
};

static struct conn *conns;

static int listen_on(int ep, enum kind kind) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("bind");
  if (listen(fd, 65535) != 0) die("listen");
  conns[fd].kind = kind;
  watch(ep, EPOLL_CTL_ADD, fd, EPOLLIN);
  socklen_t len = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &len);
  return ntohs(sa.sin_port);
}

static void drop(int fd) {
  free(conns[fd].pending);
  conns[fd] = (struct conn){ 0 };
  close(fd);
}

static void accept_all(int ep, int lfd) {
  enum kind kind = conns[lfd].kind == SINK_LISTEN ? SINK : conns[lfd].kind == ECHO_LISTEN ? ECHO : SOURCE;
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (kind == ECHO) set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    conns[fd] = (struct conn){ .kind = kind };
    watch(ep, EPOLL_CTL_ADD, fd, EPOLLIN);
  }
}

static void sink_read(int fd) {
  struct conn *c = &conns[fd];
  for (;;) {
    ssize_t n = read(fd, io_buf, IO_BUF);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) { drop(fd); return; }
    ssize_t body = n;
    while (c->header_len < 8 && body > 0) c->header[c->header_len++] = (unsigned char)io_buf[n - body--];
    c->bytes += (uint64_t)body;
    uint64_t expected;
    memcpy(&expected, c->header, sizeof expected);  // little-endian on every machine this runs on
    if (c->header_len == 8 && !c->answered && c->bytes >= expected) {
      c->answered = 1;
      if (write(fd, &c->bytes, sizeof c->bytes) != sizeof c->bytes) { drop(fd); return; }
    }
    if (n < IO_BUF) return;
  }
}

/** The length asked for, then end of stream (the client is done). */
static void source_read(int ep, int fd) {
  struct conn *c = &conns[fd];
  ssize_t n = read(fd, c->header_len < 8 ? c->header + c->header_len : (unsigned char *)io_buf,
                   c->header_len < 8 ? (size_t)(8 - c->header_len) : IO_BUF);
  if (n < 0 && errno == EAGAIN) return;
  if (n <= 0) { drop(fd); return; }
  if (c->header_len >= 8) return;  // nothing more is expected; ignore it
  c->header_len += (int)n;
  if (c->header_len < 8) return;
  memcpy(&c->to_send, c->header, sizeof c->to_send);
  if (c->to_send > 0) watch(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
}

static void source_write(int ep, int fd) {
  struct conn *c = &conns[fd];
  while (c->to_send > 0) {
    ssize_t w = write(fd, io_buf, c->to_send < IO_BUF ? (size_t)c->to_send : IO_BUF);
    if (w < 0 && errno == EAGAIN) return;
    if (w < 0) { drop(fd); return; }
    c->to_send -= (uint64_t)w;
  }
  watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN);
}

static void echo_flush(int ep, int fd) {
  struct conn *c = &conns[fd];
  ssize_t n = write(fd, c->pending, c->pending_len);
  if (n < 0 && errno != EAGAIN) { drop(fd); return; }
  if (n > 0) {
    memmove(c->pending, c->pending + n, c->pending_len - (size_t)n);
    c->pending_len -= (size_t)n;
  }
  if (c->pending_len == 0) watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN);
}

static void echo_read(int ep, int fd) {
  ssize_t n = read(fd, io_buf, IO_BUF);
  if (n <= 0) {
    if (n < 0 && errno == EAGAIN) return;
    drop(fd);
    return;
  }
  ssize_t w = write(fd, io_buf, (size_t)n);
  if (w < 0 && errno != EAGAIN) { drop(fd); return; }
  if (w < 0) w = 0;
  if (w < n) {
    // The client is not reading: keep the rest and stop reading until it is taken.
    struct conn *c = &conns[fd];
    c->pending = malloc((size_t)(n - w));
    memcpy(c->pending, io_buf + w, (size_t)(n - w));
    c->pending_len = (size_t)(n - w);
    watch(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
  }
}

static _Noreturn void serve(void) {
  conns = calloc(raise_nofile(1 << 17), sizeof *conns);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  int sink_port = listen_on(ep, SINK_LISTEN);
  int echo_port = listen_on(ep, ECHO_LISTEN);
  int source_port = listen_on(ep, SOURCE_LISTEN);
  printf("ready %d %d %d\n", sink_port, echo_port, source_port);
  fflush(stdout);
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int n = wait_events(ep, events, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      switch (conns[fd].kind) {
        case SINK_LISTEN: case ECHO_LISTEN: case SOURCE_LISTEN: accept_all(ep, fd); break;
        case SINK: sink_read(fd); break;
        case SOURCE:
          if (conns[fd].to_send > 0) source_write(ep, fd);
          else source_read(ep, fd);
          break;
        case ECHO:
          if (conns[fd].pending_len > 0) echo_flush(ep, fd);
          else echo_read(ep, fd);
          break;
        case NONE: break;
      }
    }
  }
}

// ----------------------------------------------------------------------------------------- bulk

/** Connects `n` streams; each gets its share of `total` (the first also the remainder). */
static void connect_streams(const struct sockaddr_in *sa, int n, uint64_t total, int *fds, uint64_t *shares) {
  for (int i = 0; i < n; i++) {
    fds[i] = connect_blocking(sa);
    set_nonblocking(fds[i], 1);
    shares[i] = total / (uint64_t)n + (i == 0 ? total % (uint64_t)n : 0);
  }
}

/** Each stream's length first: 8 bytes into an empty socket buffer are always taken at once. */
static void announce_streams(int ep, int n, const int *fds, const uint64_t *shares, uint32_t events) {
  for (int i = 0; i < n; i++) {
    if (write(fds[i], &shares[i], sizeof shares[i]) != sizeof shares[i]) die("write");
    watch(ep, EPOLL_CTL_ADD, fds[i], events);
  }
}

static int index_of(const int *fds, int fd) {
  int i = 0;
  while (fds[i] != fd) i++;
  return i;
}

static void report_bulk(const char *mode, int nstreams, uint64_t total, uint64_t received, double seconds, int errors, double cpu) {
  printf("{\"mode\":\"%s\",\"streams\":%d,\"bytes\":%llu,\"received\":%llu,\"seconds\":%.6f,\"errors\":%d,\"cpuSeconds\":%.4f}\n",
         mode, nstreams, (unsigned long long)total, (unsigned long long)received, seconds, errors, cpu);
}

struct stream {
  uint64_t to_send;
  uint64_t echoed;  // the sink's answer, once it has arrived
  int count_len;
  unsigned char count[8];
  int done;
};

static int bulk(const struct sockaddr_in *sa, int nstreams, uint64_t total) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int fds[nstreams];
  uint64_t shares[nstreams];
  struct stream st[nstreams];
  connect_streams(sa, nstreams, total, fds, shares);
  for (int i = 0; i < nstreams; i++) st[i] = (struct stream){ .to_send = shares[i] };
  for (size_t i = 0; i < IO_BUF; i++) io_buf[i] = (char)(i * 131u);
  double cpu0 = cpu_s();
  double t0 = now_s();
  announce_streams(ep, nstreams, fds, shares, EPOLLOUT);
  int left = nstreams;
  uint64_t received = 0;
  int errors = 0;
  struct epoll_event events[MAX_EVENTS];
  while (left > 0) {
    int n = wait_events(ep, events, -1);
    for (int e = 0; e < n; e++) {
      int i = index_of(fds, events[e].data.fd);
      struct stream *s = &st[i];
      if (s->done) continue;
      if (s->to_send > 0) {
        while (s->to_send > 0) {
          size_t chunk = s->to_send < IO_BUF ? (size_t)s->to_send : IO_BUF;
          ssize_t w = write(fds[i], io_buf, chunk);
          if (w < 0 && errno == EAGAIN) break;
          if (w < 0) { errors++; s->done = 1; left--; watch(ep, EPOLL_CTL_DEL, fds[i], 0); break; }
          s->to_send -= (uint64_t)w;
        }
        if (s->to_send == 0 && !s->done) watch(ep, EPOLL_CTL_MOD, fds[i], EPOLLIN);
        continue;
      }
      ssize_t r = read(fds[i], s->count + s->count_len, sizeof s->count - (size_t)s->count_len);
      if (r > 0) s->count_len += (int)r;
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) errors++;
      else if (s->count_len < 8) continue;
      if (s->count_len == 8) memcpy(&s->echoed, s->count, 8);
      received += s->echoed;
      s->done = 1;
      left--;
    }
  }
  double seconds = now_s() - t0;
  for (int i = 0; i < nstreams; i++) close(fds[i]);
  report_bulk("bulk", nstreams, total, received, seconds, errors, cpu_s() - cpu0);
  return 0;
}

static int download(const struct sockaddr_in *sa, int nstreams, uint64_t total) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int fds[nstreams];
  uint64_t want[nstreams], got[nstreams];
  connect_streams(sa, nstreams, total, fds, want);
  memset(got, 0, sizeof got);
  double cpu0 = cpu_s();
  double t0 = now_s();
  announce_streams(ep, nstreams, fds, want, EPOLLIN);
  int left = nstreams;
  int errors = 0;
  uint64_t received = 0;
  struct epoll_event events[MAX_EVENTS];
  while (left > 0) {
    int n = wait_events(ep, events, -1);
    for (int e = 0; e < n; e++) {
      int i = index_of(fds, events[e].data.fd);
      ssize_t r = read(fds[i], io_buf, IO_BUF);
      if (r < 0 && errno == EAGAIN) continue;
      if (r > 0) {
        got[i] += (uint64_t)r;
        received += (uint64_t)r;
        if (got[i] < want[i]) continue;
      } else {
        errors++;  // the stream ended before its share arrived
      }
      watch(ep, EPOLL_CTL_DEL, fds[i], 0);
      left--;
    }
  }
  double seconds = now_s() - t0;
  for (int i = 0; i < nstreams; i++) close(fds[i]);
  report_bulk("down", nstreams, total, received, seconds, errors, cpu_s() - cpu0);
  return 0;
}

// ------------------------------------------------------------------------------------------- rr

struct samples {
  uint32_t *ns;
  size_t len, cap;
};

static void record(struct samples *s, uint64_t ns) {
  if (s->len == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1 << 16;
    s->ns = realloc(s->ns, s->cap * sizeof *s->ns);
    if (s->ns == NULL) die("realloc");
  }
  s->ns[s->len++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static double percentile_us(const struct samples *s, double p) {
  if (s->len == 0) return 0;
  size_t i = (size_t)(p * (double)(s->len - 1) + 0.5);
  return s->ns[i] / 1000.0;
}

/** Reads exactly `len` bytes from a blocking socket; 0 on EOF or error. */
static int read_full(int fd, char *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(fd, buf + got, len - got);
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  return 1;
}

struct rr_conn {
  uint64_t sent_at;
  size_t got;
};

static int rr(const struct sockaddr_in *sa, int nconns, size_t size, double warmup, double seconds) {
  char msg[size], reply[size];
  memset(msg, 'x', size);
  int fds[nconns];
  for (int i = 0; i < nconns; i++) fds[i] = connect_blocking(sa);
  struct samples lat = { 0 };
  uint64_t trips = 0, all_trips = 0;
  int errors = 0;
  double t0 = now_s(), measure_from = t0 + warmup, end = measure_from + seconds;
  int measuring = 0;
  double cpu0 = 0, started = 0;
  if (nconns == 1) {
    // One connection: blocking calls, the shortest path the kernel offers.
    for (;;) {
      uint64_t a = now_ns();
      double t = (double)a / 1e9;
      if (!measuring && t >= measure_from) { measuring = 1; started = t; cpu0 = cpu_s(); }
      if (t >= end) break;
      if (write(fds[0], msg, size) != (ssize_t)size || !read_full(fds[0], reply, size)) { errors++; break; }
      all_trips++;
      if (measuring) { record(&lat, now_ns() - a); trips++; }
    }
  } else {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct rr_conn st[nconns];
    for (int i = 0; i < nconns; i++) {
      set_nonblocking(fds[i], 1);
      watch(ep, EPOLL_CTL_ADD, fds[i], EPOLLIN);
      st[i] = (struct rr_conn){ .sent_at = now_ns() };
      if (write(fds[i], msg, size) != (ssize_t)size) die("write");
    }
    struct epoll_event events[MAX_EVENTS];
    int active = nconns;
    while (active > 0) {
      int n = wait_events(ep, events, 1000);
      if (n == 0) { errors++; break; }
      uint64_t t_ns = now_ns();
      double t = (double)t_ns / 1e9;
      if (!measuring && t >= measure_from) { measuring = 1; started = t; cpu0 = cpu_s(); }
      for (int e = 0; e < n; e++) {
        int i = index_of(fds, events[e].data.fd);
        ssize_t r = read(fds[i], reply, size - st[i].got);
        if (r < 0 && errno == EAGAIN) continue;
        if (r <= 0) { errors++; watch(ep, EPOLL_CTL_DEL, fds[i], 0); active--; continue; }
        st[i].got += (size_t)r;
        if (st[i].got < size) continue;
        all_trips++;
        if (measuring) { record(&lat, t_ns - st[i].sent_at); trips++; }
        if (t >= end) { watch(ep, EPOLL_CTL_DEL, fds[i], 0); active--; continue; }
        st[i] = (struct rr_conn){ .sent_at = t_ns };
        if (write(fds[i], msg, size) != (ssize_t)size) { errors++; watch(ep, EPOLL_CTL_DEL, fds[i], 0); active--; }
      }
    }
  }
  double measured = now_s() - started;
  double cpu = cpu_s() - cpu0;
  for (int i = 0; i < nconns; i++) close(fds[i]);
  qsort(lat.ns, lat.len, sizeof *lat.ns, cmp_u32);
  printf("{\"mode\":\"rr\",\"conns\":%d,\"size\":%zu,\"roundTrips\":%llu,\"allRoundTrips\":%llu,\"seconds\":%.6f,"
         "\"p50us\":%.2f,\"p99us\":%.2f,\"p999us\":%.2f,\"maxus\":%.2f,\"errors\":%d,\"cpuSeconds\":%.4f}\n",
         nconns, size, (unsigned long long)trips, (unsigned long long)all_trips, measured, percentile_us(&lat, 0.5), percentile_us(&lat, 0.99),
         percentile_us(&lat, 0.999), percentile_us(&lat, 1.0), errors, cpu);
  return 0;
}


// ---------------------------------------------------------------------------- stdin, check

/** One line of stdin without its newline (one byte at a time: nothing read past it); 0 on EOF. */
static int read_line(char *line, size_t cap) {
  size_t len = 0;
  for (;;) {
    char ch;
    ssize_t r = read(0, &ch, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) { line[len] = 0; return len > 0; }
    if (ch == '\n') { line[len] = 0; return 1; }
    if (len + 1 < cap) line[len++] = ch;
  }
}

/** True when a line is waiting on stdin (the clients below must not block on it). */
static int stdin_ready(void) {
  struct pollfd p = { .fd = 0, .events = POLLIN };
  return poll(&p, 1, 0) > 0;
}

#define CHECK_TIMEOUT_MS 10000

/**
 * One 1-byte echo on each held session (blocking sockets), all sent first, then every answer
 * awaited for up to CHECK_TIMEOUT_MS: a session that is closed, reset or silent has failed.
 */
static void check_held(const int *held, int count) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  char byte = 'c';
  int waiting = 0, ok = 0;
  for (int i = 0; i < count; i++) {
    set_nonblocking(held[i], 1);
    if (write(held[i], &byte, 1) != 1) continue;
    watch(ep, EPOLL_CTL_ADD, held[i], EPOLLIN);
    waiting++;
  }
  double deadline = now_s() + CHECK_TIMEOUT_MS / 1000.0;
  struct epoll_event events[MAX_EVENTS];
  while (waiting > 0) {
    int left_ms = (int)((deadline - now_s()) * 1000);
    if (left_ms <= 0) break;
    int n = wait_events(ep, events, left_ms);
    for (int e = 0; e < n; e++) {
      int fd = events[e].data.fd;
      char got;
      ssize_t r = read(fd, &got, 1);
      if (r < 0 && errno == EAGAIN) continue;
      if (r == 1) ok++;
      watch(ep, EPOLL_CTL_DEL, fd, 0);
      waiting--;
    }
  }
  close(ep);
  printf("{\"mode\":\"check\",\"checked\":%d,\"ok\":%d,\"failed\":%d}\n", count, ok, count - ok);
  fflush(stdout);
}

// ---------------------------------------------------------------------------------------- trace

struct trip {
  uint64_t start, end;  // CLOCK_MONOTONIC ns
};

/** How long a round trip may be unanswered before stdin is looked at again. */
#define TRACE_POLL_MS 50
/** How long a round trip in flight at the stop may still take before it counts as unanswered. */
#define TRACE_GRACE_MS 5000

static int trace(const struct sockaddr_in *sa, size_t size) {
  char msg[size], reply[size];
  memset(msg, 'p', size);
  int fd = connect_blocking(sa);
  struct timeval tv = { .tv_sec = 0, .tv_usec = TRACE_POLL_MS * 1000 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct trip *trips = NULL;
  size_t len = 0, cap = 0;
  int errors = 0, unanswered = 0;
  uint64_t from = 0, to = 0;
  char line[128];
  for (;;) {
    if (stdin_ready()) {
      if (!read_line(line, sizeof line) || sscanf(line, "stop %lu %lu", &from, &to) == 2) break;
    }
    uint64_t start = now_ns();
    if (write(fd, msg, size) != (ssize_t)size) { errors++; break; }
    size_t got = 0;
    int stop = 0;
    uint64_t stop_deadline = 0;
    while (got < size) {
      ssize_t r = read(fd, reply + got, size - got);
      if (r > 0) { got += (size_t)r; continue; }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        // Unanswered for now. A stop that comes meanwhile gives it TRACE_GRACE_MS more to be
        // answered (a slow resumption is a stall, not a loss); then it ends, counted to then.
        if (!stop && stdin_ready() && (!read_line(line, sizeof line) || sscanf(line, "stop %lu %lu", &from, &to) == 2)) {
          stop = 1;
          stop_deadline = now_ns() + (uint64_t)TRACE_GRACE_MS * 1000000u;
        }
        if (stop && now_ns() > stop_deadline) break;
        continue;
      }
      errors++;
      stop = 1;
      break;
    }
    if (len == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      trips = realloc(trips, cap * sizeof *trips);
      if (trips == NULL) die("realloc");
    }
    trips[len++] = (struct trip){ start, now_ns() };
    if (got < size) { unanswered = 1; }
    if (stop) break;
  }
  if (to == 0) {
    // stdin ended (or the session failed first): wait for the times all the same
    while (read_line(line, sizeof line) && sscanf(line, "stop %lu %lu", &from, &to) != 2) {}
  }
  close(fd);
  // Before: round trips that ended before FROM. During: those overlapping FROM..TO.
  struct samples before = { 0 };
  uint64_t longest = 0, longest_start = from;
  size_t during = 0, after = 0;
  for (size_t i = 0; i < len; i++) {
    uint64_t rtt = trips[i].end - trips[i].start;
    if (trips[i].end < from) record(&before, rtt);
    else if (trips[i].start <= to) {
      during++;
      if (rtt > longest) { longest = rtt; longest_start = trips[i].start; }
    }
    else after++;
  }
  qsort(before.ns, before.len, sizeof *before.ns, cmp_u32);
  printf("{\"mode\":\"trace\",\"size\":%zu,\"roundTrips\":%zu,\"before\":%zu,\"during\":%zu,\"after\":%zu,"
         "\"p50BeforeUs\":%.2f,\"maxBeforeUs\":%.2f,\"longestDuringUs\":%.2f,\"longestFromMs\":%.3f,\"unanswered\":%d,\"errors\":%d}\n",
         size, len, before.len, during, after, percentile_us(&before, 0.5), percentile_us(&before, 1.0),
         longest / 1000.0, ((double)longest_start - (double)from) / 1e6, unanswered, errors);
  return 0;
}

// --------------------------------------------------------------------------------------- stream

/**
 * Bytes `pos`.. of stream `id` into `out`: word k of a stream is splitmix64 of the stream and k,
 * so a byte lost, repeated or moved anywhere shows at once.
 */
static void stream_fill(uint64_t id, uint64_t pos, unsigned char *out, size_t len) {
  for (size_t k = 0; k < len;) {
    uint64_t at = pos + k;
    uint64_t z = (id << 40) ^ (at >> 3);
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    for (unsigned b = (unsigned)(at & 7); b < 8 && k < len; b++, k++) out[k] = (unsigned char)(z >> (b * 8));
  }
}

struct flow {
  uint64_t sent, received;
  uint64_t mismatch_at;  // first position that came back wrong, + 1; 0: none
  uint64_t last_progress;
  int failed;
};

/** Bytes a flow may have sent and not got back: bounds what sits in the relay and the echo. */
#define STREAM_WINDOW (256 * 1024)
#define STREAM_TICK_MS 5
#define STREAM_DRAIN_MS 10000

static int stream(const struct sockaddr_in *sa, int nconns, double rate) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int fds[nconns];
  struct flow fl[nconns];
  for (int i = 0; i < nconns; i++) {
    fds[i] = connect_blocking(sa);
    set_nonblocking(fds[i], 1);
    watch(ep, EPOLL_CTL_ADD, fds[i], EPOLLIN);
    fl[i] = (struct flow){ .last_progress = now_ns() };
  }
  static unsigned char buf[STREAM_WINDOW], expected[STREAM_WINDOW];
  uint64_t t0 = now_ns();
  uint64_t longest_gap = 0, drain_until = 0;
  int sending = 1;
  char line[64];
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    uint64_t now = now_ns();
    if (sending && stdin_ready()) {
      read_line(line, sizeof line);
      sending = 0;
      drain_until = now + (uint64_t)STREAM_DRAIN_MS * 1000000u;
    }
    int pending = 0;
    for (int i = 0; i < nconns; i++) {
      struct flow *f = &fl[i];
      if (f->failed) continue;
      if (f->received < f->sent) {
        pending = 1;
        uint64_t gap = now - f->last_progress;
        if (gap > longest_gap) longest_gap = gap;
      } else {
        f->last_progress = now;
      }
      if (!sending) continue;
      uint64_t allowed = (uint64_t)(rate * (double)(now - t0) / 1e9);
      uint64_t want = allowed > f->sent ? allowed - f->sent : 0;
      uint64_t room = STREAM_WINDOW - (f->sent - f->received);
      if (want > room) want = room;
      if (want == 0) continue;
      stream_fill((uint64_t)i, f->sent, buf, (size_t)want);
      ssize_t w = write(fds[i], buf, (size_t)want);
      if (w < 0 && errno != EAGAIN) { f->failed = 1; continue; }
      if (w > 0) f->sent += (uint64_t)w;
    }
    if (!sending && (!pending || now > drain_until)) break;
    int n = wait_events(ep, events, STREAM_TICK_MS);
    for (int e = 0; e < n; e++) {
      int i = index_of(fds, events[e].data.fd);
      struct flow *f = &fl[i];
      ssize_t r = read(fds[i], buf, sizeof buf);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) { f->failed = 1; watch(ep, EPOLL_CTL_DEL, fds[i], 0); continue; }
      if (f->mismatch_at == 0) {
        stream_fill((uint64_t)i, f->received, expected, (size_t)r);
        for (ssize_t k = 0; k < r; k++) {
          if (buf[k] != expected[k]) { f->mismatch_at = f->received + (uint64_t)k + 1; break; }
        }
      }
      f->received += (uint64_t)r;
      f->last_progress = now_ns();
    }
  }
  double seconds = (double)(now_ns() - t0) / 1e9;
  uint64_t sent = 0, received = 0;
  int failed = 0, mismatched = 0, short_ = 0;
  for (int i = 0; i < nconns; i++) {
    sent += fl[i].sent;
    received += fl[i].received;
    failed += fl[i].failed;
    mismatched += fl[i].mismatch_at != 0;
    short_ += fl[i].received != fl[i].sent;
    reset_close(fds[i]);
  }
  printf("{\"mode\":\"stream\",\"conns\":%d,\"sent\":%llu,\"received\":%llu,\"seconds\":%.6f,\"failed\":%d,"
         "\"mismatched\":%d,\"short\":%d,\"longestGapUs\":%.2f}\n",
         nconns, (unsigned long long)sent, (unsigned long long)received, seconds, failed, mismatched, short_, longest_gap / 1000.0);
  return 0;
}

// ----------------------------------------------------------------------------------------- open

enum open_state { CONNECTING, WAITING_ECHO };

static int open_sessions(const struct sockaddr_in *sa, int count, int window) {
  raise_nofile((rlim_t)count + 256);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int *held = calloc((size_t)count, sizeof *held);
  // Indexed by descriptor: they stay below the sessions held plus those in flight.
  enum open_state *state = calloc((size_t)count + (size_t)window + 256, sizeof *state);
  int started = 0, opened = 0, failed = 0, in_flight = 0;
  double cpu0 = cpu_s();
  double t0 = now_s();
  struct epoll_event events[MAX_EVENTS];
  char byte = 'o';
  while (opened + failed < count) {
    while (in_flight < window && started < count) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) die("socket");
      set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
      started++;
      if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 && errno != EINPROGRESS) {
        failed++;
        close(fd);
        continue;
      }
      state[fd] = CONNECTING;
      watch(ep, EPOLL_CTL_ADD, fd, EPOLLOUT);
      in_flight++;
    }
    int n = wait_events(ep, events, 10000);
    if (n == 0) break;  // nothing moved for 10 s: report what we have
    for (int e = 0; e < n; e++) {
      int fd = events[e].data.fd;
      int ok = 1;
      if (state[fd] == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        ok = err == 0 && write(fd, &byte, 1) == 1;
        if (ok) {
          state[fd] = WAITING_ECHO;
          watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN);
          continue;
        }
      } else {
        char got;
        ssize_t r = read(fd, &got, 1);
        if (r < 0 && errno == EAGAIN) continue;
        ok = r == 1;
      }
      watch(ep, EPOLL_CTL_DEL, fd, 0);
      in_flight--;
      if (ok) {
        held[opened++] = fd;
      } else {
        failed++;
        close(fd);
      }
    }
  }
  double seconds = now_s() - t0;
  printf("{\"mode\":\"open\",\"opened\":%d,\"failed\":%d,\"seconds\":%.6f,\"cpuSeconds\":%.4f}\n",
         opened, count - opened, seconds, cpu_s() - cpu0);
  fflush(stdout);
  char line[64];
  while (read_line(line, sizeof line) && strcmp(line, "check") == 0) check_held(held, opened);
  for (int i = 0; i < opened; i++) reset_close(held[i]);
  printf("{\"mode\":\"closed\",\"closed\":%d}\n", opened);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 2 && strcmp(argv[1], "serve") == 0) serve();
  if (argc == 6 && strcmp(argv[1], "bulk") == 0) {
    struct sockaddr_in sa = address(argv[2], argv[3]);
    return bulk(&sa, atoi(argv[4]), strtoull(argv[5], NULL, 10));
  }
  if (argc == 6 && strcmp(argv[1], "down") == 0) {
    struct sockaddr_in sa = address(argv[2], argv[3]);
    return download(&sa, atoi(argv[4]), strtoull(argv[5], NULL, 10));
  }
  if (argc == 8 && strcmp(argv[1], "rr") == 0) {
    struct sockaddr_in sa = address(argv[2], argv[3]);
    return rr(&sa, atoi(argv[4]), (size_t)atoi(argv[5]), atof(argv[6]), atof(argv[7]));
  }
  if (argc == 6 && strcmp(argv[1], "open") == 0) {
    struct sockaddr_in sa = address(argv[2], argv[3]);
    return open_sessions(&sa, atoi(argv[4]), atoi(argv[5]));
  }
  if (argc == 5 && strcmp(argv[1], "trace") == 0) {
    struct sockaddr_in sa = address(argv[2], argv[3]);
    return trace(&sa, (size_t)atoi(argv[4]));
  }
  if (argc == 6 && strcmp(argv[1], "stream") == 0) {
    struct sockaddr_in sa = address(argv[2], argv[3]);
    return stream(&sa, atoi(argv[4]), atof(argv[5]));
  }
  fprintf(stderr, "usage: loadgen serve | bulk|down HOST PORT STREAMS BYTES | rr HOST PORT CONNS SIZE WARMUP SECONDS | open HOST PORT COUNT WINDOW"
                  " | trace HOST PORT SIZE | stream HOST PORT CONNS RATE\n");
  return 2;
}
