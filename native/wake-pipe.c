/*
 * A pipe for waking the event loop from another thread without a lock: pipe() → [readFd, writeFd],
 * both non-blocking and close-on-exec. The loop reads the read end as a stream (net.Socket on the
 * fd); a thread writes one byte to the write end (fs.writeSync). Node's own cross-thread messages
 * (MessagePort) wake the receiver while the sender still holds the queue's lock, so a receiver of
 * higher priority than the sender stalls on that lock until the sender runs again; a pipe's write
 * holds nothing of ours.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

static napi_value make_pipe(napi_env env, napi_callback_info info) {
  int fds[2];
  napi_value out, r, w;
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, fds[0], &r);
  napi_create_int32(env, fds[1], &w);
  napi_set_element(env, out, 0, r);
  napi_set_element(env, out, 1, w);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "pipe", NAPI_AUTO_LENGTH, make_pipe, NULL, &fn);
  napi_set_named_property(env, exports, "pipe", fn);
  return exports;
}
