/*
 * lseek(fd, offset, SEEK_DATA / SEEK_HOLE) for Node, which has no binding for them: the raw disk
 * reader asks the filesystem where a sparse file's data is instead of reading its holes (what
 * qemu-img does). Positional reads elsewhere (pread) do not depend on the file offset this moves.
 *
 * seekData(fd, offset) / seekHole(fd, offset) → the offset, or -1 when there is no data (ENXIO)
 * at or after `offset`. Other errors (EINVAL: the filesystem cannot say) throw.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

static napi_value seek(napi_env env, napi_callback_info info, int whence) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  double offset;
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_double(env, argv[1], &offset) != napi_ok || offset < 0) {
    napi_throw_type_error(env, NULL, "expected (fd, offset)");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)offset, whence);
  if (r < 0) {
    if (errno == ENXIO) {
      napi_create_double(env, -1, &out);
      return out;
    }
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  napi_create_double(env, (double)r, &out);
  return out;
}

static napi_value seek_data(napi_env env, napi_callback_info info) { return seek(env, info, SEEK_DATA); }
static napi_value seek_hole(napi_env env, napi_callback_info info) { return seek(env, info, SEEK_HOLE); }

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "seekData", NAPI_AUTO_LENGTH, seek_data, NULL, &fn);
  napi_set_named_property(env, exports, "seekData", fn);
  napi_create_function(env, "seekHole", NAPI_AUTO_LENGTH, seek_hole, NULL, &fn);
  napi_set_named_property(env, exports, "seekHole", fn);
  return exports;
}
