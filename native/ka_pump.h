// Between the byte pump's event loop (ka_pump.c) and its JavaScript class (ka_relay.c): the
// state of a relay and its two legs, what the class asks of the loop, and how the loop calls
// back into JavaScript. Internal to the addon; JavaScript sees only the Relay class.
#ifndef KA_PUMP_H
#define KA_PUMP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <node_api.h>

#include "ka_native.h"

enum { LEG_CLIENT = 0, LEG_TARGET = 1 };
enum { EV_CONNECT = 1, EV_EOF = 2, EV_ERROR = 3, EV_CLOSE = 4, EV_DATA = 5 };

typedef struct relay relay_t;
typedef struct leg leg_t;
// One environment's (thread's) pump: its epoll set, libuv handles, read buffer and queues.
typedef struct ka_pump ka_pump_t;

struct leg {
  relay_t* relay;
  int index;
  int fd;  // -1 once closed
  // Bytes read from the other leg that this leg's socket has not taken yet.
  char* queue;
  size_t queue_cap;
  size_t queue_off;
  size_t queue_len;
  double bytes_read;
  leg_t* ready_next;
  uint32_t slot;  // its entry in the pump's slot table while registered (what epoll hands back)
  unsigned registered : 1;  // in the epoll set (counts in open_legs)
  unsigned readable : 1;    // edge seen, no EAGAIN since
  unsigned writable : 1;
  unsigned peer_fin : 1;    // EPOLLRDHUP seen: read to the end, a short read proves nothing
  unsigned in_ready : 1;
  unsigned connecting : 1;
  unsigned read_eof : 1;
  unsigned fin_wanted : 1;
  unsigned fin_sent : 1;
  unsigned failed : 1;
  unsigned dead_drain : 1;  // the kernel closed it: read it to its end regardless
  unsigned urgent : 1;      // EPOLLPRI seen: a read may stop short at the urgent mark
};

struct relay {
  leg_t legs[2];
  napi_env env;
  ka_pump_t* pump;    // its environment's; referenced until the relay is freed
  ka_js_t js;         // held until both legs are closed, then released
  int started;        // bytes flow (set by start(), after the target leg connected)
  int js_alive;       // the JavaScript wrapper has not been finalised
  int faulted;                     // the callback threw: both legs were reset
  int own_fds;        // made with RELAY_OWN_FD: adopt() takes the target's descriptor as it is too
  int connect_flags;  // CONNECT_KEEPALIVE, CONNECT_START: what the pump does once the target connects
  int32_t target_keepalive[5];  // for CONNECT_KEEPALIVE, as ka_set_keepalive takes them
  relay_t* grave_next;
  // A reader (RELAY_READER): one leg (the client's), whose reads are JavaScript's, each read
  // into `into` (a Buffer of JavaScript's, held by into_ref) and told as EV_DATA with its length;
  // `paused`: not read (JavaScript's backpressure) until start(), unless the leg died (read to
  // its end all the same, as a relay's). Nothing is ever written to it here.
  int reader;
  int paused;
  char* into;
  size_t into_len;
  napi_ref into_ref;
};

// ---- the event loop (ka_pump.c) ----------------------------------------------------------

// The pump of env (the environment's instance data), set up by the first Relay or Acceptor
// made there; NULL with an exception thrown when it cannot serve it.
ka_pump_t* ka_pump_init(napi_env env);
// JavaScript is called only while the pump dispatches what epoll reported (or its ready queue),
// inside one handle scope and one callback scope for the whole dispatch, opened at the first
// call (this) and closed when the dispatch ends: a call into JavaScript costs one function call,
// and the microtasks and next ticks the callbacks queue run once, when the dispatch is done.
// Every callback runs in the pump's async context. 0 when the scope cannot be opened (or outside
// a dispatch).
int ka_pump_js_scope(ka_pump_t* p);
// An acceptor holds its pump: a reference taken when it is made, dropped when it is finalized.
void ka_pump_ref(ka_pump_t* p);
void ka_pump_unref(ka_pump_t* p);
// A relay around the accepted client's descriptor, registered with the pump; NULL with *err,
// *syscall and *what set when that failed (the caller keeps its own descriptor). flags: see
// RELAY_OWN_FD.
relay_t* ka_pump_relay_new(ka_pump_t* p, napi_env env, int client_fd, int flags, int* err, const char** syscall, const char** what);
// The relay takes the descriptor as it is, no duplicate: one accepted by the pump (ka_accept.c),
// which inherited SO_OOBINLINE from the listening socket (no call to set it), or one received
// by an upgrade, whose target leg ka_pump_adopt then takes as it is too (and sets it on both).
// RELAY_READER: a reader (see struct relay), made by ka_relay.c around a duplicate.
enum { RELAY_OWN_FD = 1, RELAY_READER = 2 };
// Frees a relay JavaScript never knew (its construction failed after ka_pump_relay_new).
void ka_pump_relay_free(relay_t* r);
// A new attempt after a failed one (the next address of the target's name) starts clean.
void ka_pump_reset_target(relay_t* r);
// What the pump does itself once the target leg connects, before it reports CONNECT (whose
// errno is then that of a keepalive option that could not be set, else 0):
// CONNECT_KEEPALIVE sets r->target_keepalive on the leg, CONNECT_START starts relaying (as
// start() would; nothing JavaScript does at CONNECT can hold the bytes back then).
enum { CONNECT_KEEPALIVE = 1, CONNECT_START = 2 };
// Opens the target leg, non-blocking; CONNECT or ERROR follows. 0, or the errno of a failure now.
int ka_pump_connect(relay_t* r, const struct sockaddr_storage* sa, socklen_t sa_len);
// Both legs begin relaying (after CONNECT); a reader reads again.
void ka_pump_start(relay_t* r);
// A reader stops reading (what arrives waits in the kernel) until ka_pump_start.
void ka_pump_pause(relay_t* r);
// A FIN to the leg's peer once its queue has drained; 1 when the leg closed at once.
int ka_pump_end(leg_t* leg);
// Closes a leg (with an RST when reset), out of the epoll set first.
void ka_pump_close_leg(leg_t* leg, int reset);
// Out of the epoll set without a close: the descriptor is the caller's again.
int ka_pump_release_leg(leg_t* leg);
// Bytes queued for the leg.
size_t ka_pump_queued(const leg_t* leg);
// An upgrade takes the relay away: both legs leave the epoll set and the relay lets go of
// their descriptors without closing them (no FIN, no RST reaches a peer); the caller owns
// out_fds. Only a relaying relay with both legs open and healthy can go (0 otherwise, nothing
// changed). The queues stay with the legs for the caller to copy, then ka_pump_drop_queues.
int ka_pump_detach(relay_t* r, int out_fds[2]);
// The legs' queues are freed (after ka_pump_detach, once copied).
void ka_pump_drop_queues(relay_t* r);
// The other side of an upgrade: the target leg is a connected socket taken over, and each leg
// gets what the old process held for it and its half-close state. A duplicate of target_fd is
// taken (the caller keeps its own), unless the relay took its client as it is (RELAY_OWN_FD):
// then target_fd itself, and on failure both descriptors are released to the caller, not closed.
// 0, or an errno (the caller's descriptors are then as they were).
int ka_pump_adopt(relay_t* r, int target_fd, const char* queued[2], const size_t queued_len[2], const int flags[2],
                  const double bytes[2]);
enum { ADOPT_END_REQUESTED = 1, ADOPT_FIN_SENT = 2, ADOPT_END_RECEIVED = 4 };
// JavaScript has let go of the relay: it is freed once no queued event can name it.
void ka_pump_forget(relay_t* r);

// A listening socket in the pump's epoll set (level-triggered: an acceptor that stops short of
// EAGAIN is told again at the next wait). 0, or an errno.
typedef struct ka_acceptor ka_acceptor_t;
int ka_pump_watch_listener(ka_pump_t* p, ka_acceptor_t* a, int fd);
// Out of the epoll set (before the descriptor is closed, or to pause after EMFILE).
void ka_pump_unwatch_listener(ka_pump_t* p, int fd);
// An open acceptor keeps the loop alive, as a listening server does, paused or not: hold 1 when
// it opens, 0 when it closes.
void ka_pump_hold(ka_pump_t* p, int hold);

// ---- accepting (ka_accept.c) ------------------------------------------------------------

// The listening socket is readable: accept what is waiting, hand JavaScript one batch.
void ka_accept_ready(ka_acceptor_t* a);

// ---- calling JavaScript (ka_relay.c) ----------------------------------------------------

// callback.call(owner, kind, leg, err); a callback that throws fails the relay.
void ka_relay_emit(relay_t* r, int kind, int leg, int err);
// Both legs closed: JavaScript will hear nothing more, so the relay stops holding it.
void ka_relay_release_if_done(relay_t* r);

#endif
