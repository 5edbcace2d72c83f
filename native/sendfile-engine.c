/*
 * The sendfile engine: sends ranges of files to sockets with sendfile(2), so a download's bytes go
 * from the page cache to the socket inside the kernel — no copy into Node's heap, no event-loop
 * work per chunk. Node has no binding for sendfile (libuv's uv_fs_sendfile is blocking and runs on
 * the thread pool, four threads for the whole process).
 *
 * One engine thread per Node environment with its own epoll instance; libuv's loop and its fd
 * registrations are never touched. Each transfer works on a dup() of the socket fd, so Node
 * closing the connection (and the kernel reusing its fd number for another one) can never make the
 * engine write into someone else's connection. The dup shares O_NONBLOCK with Node's fd, which
 * Node already set: sendfile then writes what the socket buffer takes and returns EAGAIN, and
 * level-triggered EPOLLOUT says when to go on. The file fd stays the caller's; it must stay open
 * until the transfer is reported.
 *
 *   init() → readFd                                  once per environment: the read end of the wake pipe
 *   start(socketFd, fileFd, offset, length, idleMs) → id
 *   cancel(id)                                       no-op when it already ended
 *   drain() → [id, errno, bytesSent, id, ...]        the transfers that ended since the last drain;
 *       errno 0 = all sent, ENODATA = the file ended before the range did, ETIMEDOUT = no progress
 *       for idleMs, ECANCELED = cancelled, else sendfile's own (EPIPE, ECONNRESET, ...)
 *
 * Ended transfers wait in a list until the JS thread drains it; the engine writes one byte to a
 * pipe (non-blocking, the JS thread reads it as a stream) when the list goes from empty to not
 * empty, after letting go of the lock. Not an N-API thread-safe function: its call wakes the loop
 * while holding the function's lock, so the loop — woken, and of higher priority than the niced
 * engine — could wait on that lock until the engine thread got a CPU again (the same hand-over as
 * Node's MessagePort; see native/wake-pipe.c).
 *
 * A file that is not in the page cache makes sendfile wait for the disk on the engine thread;
 * that delays other transfers, never the event loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

/* one sendfile call at most; Linux caps a call near 2 GiB anyway */
#define MAX_CALL (1 << 30)
/* The engine thread's nice value, as the hashing workers' (src/io/parallel-hasher.ts): moving bytes is
 * throughput work; on a saturated machine the scheduler serves the event loop first (weight 1024
 * against 110) and the engine takes all the rest. Best effort: a process already niced above it
 * cannot lower its value without privileges, and then keeps its own. */
#define ENGINE_NICE 10
/* how often idle transfers are looked for */
#define SCAN_MS 100

typedef struct transfer {
  struct transfer *prev, *next;
  double id;
  int sock;
  int file;
  off_t offset;
  int64_t left, sent, idle_ms, last_progress_ms;
  int err;
} transfer;

typedef struct {
  pthread_mutex_t lock;
  pthread_t thread;
  int epfd, wake;
  int done_fds[2];        /* the wake pipe: [0] read by the JS thread, [1] written by the engine */
  int stopping;           /* under lock */
  transfer *incoming;     /* under lock: started, not yet seen by the engine thread */
  double *cancels;        /* under lock */
  size_t ncancels, capcancels;
  transfer *done;         /* under lock: ended, not yet drained by the JS thread */
  transfer *active;       /* engine thread only */
  transfer *ended;        /* engine thread only: ended in this round, handed over by report() */
  double next_id;         /* JS thread only */
} engine;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake(engine *e) {
  uint64_t one = 1;
  while (write(e->wake, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

static void unlink_active(engine *e, transfer *t) {
  if (t->prev) t->prev->next = t->next;
  else e->active = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
}

/* The transfer leaves the engine: its socket dup is closed; report() hands it to the JS thread. */
static void finish(engine *e, transfer *t, int err) {
  epoll_ctl(e->epfd, EPOLL_CTL_DEL, t->sock, NULL);
  close(t->sock);
  unlink_active(e, t);
  t->err = err;
  t->next = e->ended;
  e->ended = t;
}

/* Hands this round's ended transfers to the JS thread: into the done list under the lock, then —
 * the lock let go — one byte into the pipe if the list was empty (else a byte is already on its
 * way and the JS thread has not drained yet). A full pipe already wakes the loop. */
static void report(engine *e) {
  if (e->ended == NULL) return;
  transfer *last = e->ended;
  while (last->next) last = last->next;
  pthread_mutex_lock(&e->lock);
  int was_empty = e->done == NULL;
  last->next = e->done;
  e->done = e->ended;
  pthread_mutex_unlock(&e->lock);
  e->ended = NULL;
  if (was_empty) {
    char one = 1;
    while (write(e->done_fds[1], &one, 1) < 0 && errno == EINTR) {
    }
  }
}

/* Sends until the socket buffer is full (EAGAIN), the range is sent, or an error ends it. */
static void pump(engine *e, transfer *t) {
  while (t->left > 0) {
    size_t n = t->left > MAX_CALL ? MAX_CALL : (size_t)t->left;
    ssize_t w = sendfile(t->sock, t->file, &t->offset, n);
    if (w > 0) {
      t->left -= w;
      t->sent += w;
      t->last_progress_ms = now_ms();
    } else if (w == 0) {
      finish(e, t, ENODATA);
      return;
    } else if (errno == EAGAIN) {
      return;
    } else if (errno != EINTR) {
      finish(e, t, errno);
      return;
    }
  }
  finish(e, t, 0);
}

static void *run(void *arg) {
  engine *e = arg;
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), ENGINE_NICE);
  struct epoll_event evs[256];
  int64_t last_scan = now_ms();
  for (;;) {
    /* idle, the thread sleeps until start() or cancel() wakes it */
    int n = epoll_wait(e->epfd, evs, 256, e->active ? SCAN_MS : -1);
    int woken = 0;
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) woken = 1;
      else pump(e, evs[i].data.ptr);
    }
    if (woken) {
      uint64_t count;
      while (read(e->wake, &count, sizeof count) < 0 && errno == EINTR) {
      }
      pthread_mutex_lock(&e->lock);
      transfer *in = e->incoming;
      e->incoming = NULL;
      double *cancels = e->cancels;
      size_t ncancels = e->ncancels;
      e->cancels = NULL;
      e->ncancels = e->capcancels = 0;
      int stopping = e->stopping;
      pthread_mutex_unlock(&e->lock);
      while (in) {
        transfer *t = in;
        in = in->next;
        t->prev = NULL;
        t->next = e->active;
        if (e->active) e->active->prev = t;
        e->active = t;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = t};
        if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, t->sock, &ev) < 0) finish(e, t, errno);
      }
      for (size_t i = 0; i < ncancels; i++) {
        for (transfer *t = e->active; t; t = t->next) {
          if (t->id == cancels[i]) {
            finish(e, t, ECANCELED);
            break;
          }
        }
      }
      free(cancels);
      if (stopping) {
        while (e->ended) {
          transfer *t = e->ended;
          e->ended = t->next;
          free(t);
        }
        while (e->active) {
          transfer *t = e->active;
          unlink_active(e, t);
          close(t->sock);
          free(t);
        }
        return NULL;
      }
    }
    int64_t now = now_ms();
    if (now - last_scan >= SCAN_MS) {
      last_scan = now;
      for (transfer *t = e->active, *next; t; t = next) {
        next = t->next;
        if (t->idle_ms > 0 && now - t->last_progress_ms > t->idle_ms) finish(e, t, ETIMEDOUT);
      }
    }
    report(e);
  }
}

static void stop(void *arg) {
  engine *e = arg;
  pthread_mutex_lock(&e->lock);
  e->stopping = 1;
  pthread_mutex_unlock(&e->lock);
  wake(e);
  pthread_join(e->thread, NULL);
  close(e->epfd);
  close(e->wake);
  /* the read end is the JS thread's stream's, closed with it */
  close(e->done_fds[1]);
  free(e->cancels);
  while (e->incoming) {
    transfer *t = e->incoming;
    e->incoming = t->next;
    close(t->sock);
    free(t);
  }
  while (e->done) {
    transfer *t = e->done;
    e->done = t->next;
    free(t);
  }
  pthread_mutex_destroy(&e->lock);
  free(e);
}

static engine *engine_of(napi_env env) {
  engine *e = NULL;
  napi_get_instance_data(env, (void **)&e);
  if (e == NULL) napi_throw_error(env, NULL, "the sendfile engine is not initialised: call init() first");
  return e;
}

/* On the JS thread: every transfer ended since the last drain, as [id, errno, bytesSent, ...]. */
static napi_value drain(napi_env env, napi_callback_info info) {
  engine *e = engine_of(env);
  if (e == NULL) return NULL;
  pthread_mutex_lock(&e->lock);
  transfer *t = e->done;
  e->done = NULL;
  pthread_mutex_unlock(&e->lock);
  size_t n = 0;
  for (transfer *c = t; c; c = c->next) n++;
  napi_value out, v;
  napi_create_array_with_length(env, n * 3, &out);
  uint32_t i = 0;
  while (t) {
    transfer *next = t->next;
    napi_create_double(env, t->id, &v);
    napi_set_element(env, out, i++, v);
    napi_create_int32(env, t->err, &v);
    napi_set_element(env, out, i++, v);
    napi_create_double(env, (double)t->sent, &v);
    napi_set_element(env, out, i++, v);
    free(t);
    t = next;
  }
  return out;
}

static napi_value init(napi_env env, napi_callback_info info) {
  engine *e = NULL;
  napi_get_instance_data(env, (void **)&e);
  if (e != NULL) {
    napi_throw_error(env, NULL, "the sendfile engine is already initialised");
    return NULL;
  }
  e = calloc(1, sizeof *e);
  if (e == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&e->lock, NULL);
  e->done_fds[0] = e->done_fds[1] = -1;
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  e->wake = eventfd(0, EFD_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (e->epfd < 0 || e->wake < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wake, &ev) < 0 || pipe2(e->done_fds, O_NONBLOCK | O_CLOEXEC) < 0 ||
      (errno = pthread_create(&e->thread, NULL, run, e)) != 0) {
    int err = errno;
    if (e->epfd >= 0) close(e->epfd);
    if (e->wake >= 0) close(e->wake);
    if (e->done_fds[0] >= 0) close(e->done_fds[0]);
    if (e->done_fds[1] >= 0) close(e->done_fds[1]);
    pthread_mutex_destroy(&e->lock);
    free(e);
    napi_throw_error(env, NULL, strerror(err));
    return NULL;
  }
  napi_set_instance_data(env, e, NULL, NULL);
  napi_add_env_cleanup_hook(env, stop, e);
  napi_value out;
  napi_create_int32(env, e->done_fds[0], &out);
  return out;
}

static napi_value start(napi_env env, napi_callback_info info) {
  engine *e = engine_of(env);
  if (e == NULL) return NULL;
  size_t argc = 5;
  napi_value argv[5], out;
  int32_t sock, file;
  double offset, length, idle;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 || napi_get_value_int32(env, argv[0], &sock) != napi_ok ||
      napi_get_value_int32(env, argv[1], &file) != napi_ok || napi_get_value_double(env, argv[2], &offset) != napi_ok ||
      napi_get_value_double(env, argv[3], &length) != napi_ok || napi_get_value_double(env, argv[4], &idle) != napi_ok || sock < 0 || file < 0 ||
      offset < 0 || length < 0 || idle < 0) {
    napi_throw_type_error(env, NULL, "expected start(socketFd, fileFd, offset, length, idleMs) with non-negative numbers");
    return NULL;
  }
  transfer *t = calloc(1, sizeof *t);
  if (t == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  t->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (t->sock < 0) {
    int err = errno;
    free(t);
    napi_throw_error(env, NULL, strerror(err));
    return NULL;
  }
  t->id = ++e->next_id;
  t->file = file;
  t->offset = (off_t)offset;
  t->left = (int64_t)length;
  t->idle_ms = (int64_t)idle;
  t->last_progress_ms = now_ms();
  pthread_mutex_lock(&e->lock);
  t->next = e->incoming;
  e->incoming = t;
  pthread_mutex_unlock(&e->lock);
  wake(e);
  napi_create_double(env, t->id, &out);
  return out;
}

static napi_value cancel(napi_env env, napi_callback_info info) {
  engine *e = engine_of(env);
  if (e == NULL) return NULL;
  size_t argc = 1;
  napi_value argv[1];
  double id;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_double(env, argv[0], &id) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected cancel(id)");
    return NULL;
  }
  pthread_mutex_lock(&e->lock);
  if (e->ncancels == e->capcancels) {
    size_t cap = e->capcancels ? e->capcancels * 2 : 16;
    double *grown = realloc(e->cancels, cap * sizeof *grown);
    if (grown == NULL) {
      pthread_mutex_unlock(&e->lock);
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    e->cancels = grown;
    e->capcancels = cap;
  }
  e->cancels[e->ncancels++] = id;
  pthread_mutex_unlock(&e->lock);
  wake(e);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "init", NAPI_AUTO_LENGTH, init, NULL, &fn);
  napi_set_named_property(env, exports, "init", fn);
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, cancel, NULL, &fn);
  napi_set_named_property(env, exports, "cancel", fn);
  napi_create_function(env, "drain", NAPI_AUTO_LENGTH, drain, NULL, &fn);
  napi_set_named_property(env, exports, "drain", fn);
  return exports;
}
