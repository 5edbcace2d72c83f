/*
 * Where a buffer lies in memory, for O_DIRECT writes: the kernel moves such a write from the
 * caller's memory to the device without the page-cache copy, but only from addresses aligned on
 * the device's block. JavaScript cannot see addresses; this says how far a view's first byte is
 * past a page boundary, so the caller can place its buffers on one.
 *
 * pageOffset(view) → (address of view[0]) mod 4096, for any TypedArray or DataView (shared or not).
 */
#include <stdint.h>
#include <node_api.h>

static napi_value page_offset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  bool is_typed = false;
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[0], NULL, NULL, &data, NULL, NULL) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a TypedArray");
    return NULL;
  }
  napi_create_uint32(env, (uint32_t)((uintptr_t)data & 4095), &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "pageOffset", NAPI_AUTO_LENGTH, page_offset, NULL, &fn);
  napi_set_named_property(env, exports, "pageOffset", fn);
  return exports;
}
