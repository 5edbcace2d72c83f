/*
 * Data copies inside the kernel for the converters: copy_file_range(2) moves bytes from the source
 * file's page cache to the output's without passing through Node's heap (one copy instead of a
 * read into a buffer and a write out of it), and sync_file_range(2) starts the output's writeback
 * as soon as a range is written, so a flushing cache mode has little left to flush at the end.
 * Node has no binding for either. Both calls run on libuv's thread pool (napi_async_work): the
 * event loop only starts them and takes their results.
 *
 *   scan(fd, ranges, granule) → Promise<Uint8Array>
 *       ranges: Float64Array of triples [fileOffset, guestOffset, length]. Each range is cut into
 *       granules at the multiples of `granule` in guest space (the first and last may be partial);
 *       the result has one byte per granule, ranges one after the other: 1 when any byte of it is
 *       not zero, 0 when all are (bytes past the end of the file read zeros). A granule of 16 KiB or
 *       more is read 4 KiB first and not further when those are not all zero (data almost always
 *       shows in its first bytes); smaller granules are looked at in the page cache through a
 *       mapping of the range (no copy; see scan_mapped), or read in 256 KiB pieces where the file
 *       cannot be mapped. A file that shrinks under a scan fails it with EIO.
 *   copy(srcFd, dstFd, runs, startWriteback) → Promise<number>
 *       runs: Float64Array of triples [srcOffset, dstOffset, length]; copies each and resolves with
 *       the bytes copied (short only when the source ended first: the rest stays unwritten, which
 *       reads zeros). With startWriteback, every 8 MiB copied starts the writeback of the output
 *       range it spans (SYNC_FILE_RANGE_WRITE: starts it, does not wait). Where the kernel cannot
 *       copy between the two files (EXDEV: another filesystem; EINVAL, EOPNOTSUPP, ENOSYS) the same
 *       run is copied with pread/pwrite through a 1 MiB buffer.
 *
 * Errors reject with an Error whose `code` is the errno in decimal ("5") and whose message is
 * strerror's; the caller names it. The arrays are copied when the call starts, so the
 * caller may reuse them at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

#define READ_CHUNK (256 * 1024)
#define PROBE_BYTES 4096
#define PROBE_FROM_GRANULE (16 * 1024)
#define FALLBACK_BUFFER (1024 * 1024)
#define WRITEBACK_EVERY (8 * 1024 * 1024)

static const unsigned char ZEROS[64 * 1024];

static int all_zero(const unsigned char *p, size_t n) {
  while (n > 0) {
    size_t k = n < sizeof ZEROS ? n : sizeof ZEROS;
    if (memcmp(p, ZEROS, k) != 0) return 0;
    p += k;
    n -= k;
  }
  return 1;
}

/* pread until `n` bytes or the end of the file; returns the bytes read, -1 on error (errno set) */
static ssize_t read_full(int fd, unsigned char *buf, size_t n, off_t at) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, buf + done, n - done, at + (off_t)done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += (size_t)r;
  }
  return (ssize_t)done;
}

/* 1 when [at, at + n) of fd holds a byte that is not zero, 0 when none, -1 on error */
static int has_data(int fd, unsigned char *buf, off_t at, size_t n) {
  while (n > 0) {
    size_t k = n < READ_CHUNK ? n : READ_CHUNK;
    ssize_t got = read_full(fd, buf, k, at);
    if (got < 0) return -1;
    if (!all_zero(buf, (size_t)got)) return 1;
    if ((size_t)got < k) return 0; /* the file ended: the rest reads zeros */
    at += (off_t)k;
    n -= k;
  }
  return 0;
}

/*
 * Small granules need every byte looked at. Reading them into a buffer costs a copy of each; the
 * scan looks at them in the page cache instead, through a read-only shared mapping of the range
 * (MAP_POPULATE: the page tables are filled in one go). A mapping has one hazard reads do not:
 * touching a page past the end of a file that shrank after the fstat raises SIGBUS. The handler
 * below turns that into EIO for the scan that touched it (a thread-local jump set only while a
 * scan reads its mapping); a SIGBUS anywhere else goes to the handler that was there before, or
 * ends the process as it would have.
 */
static __thread sigjmp_buf *volatile scan_jump; /* volatile: its stores must happen where written, around the reads of the mapping */
static struct sigaction previous_bus;
static pthread_once_t bus_once = PTHREAD_ONCE_INIT;

static void on_bus(int sig, siginfo_t *info, void *context) {
  sigjmp_buf *jump = scan_jump;
  if (jump) siglongjmp(*jump, 1);
  if (previous_bus.sa_flags & SA_SIGINFO) {
    if (previous_bus.sa_sigaction) previous_bus.sa_sigaction(sig, info, context);
    return;
  }
  if (previous_bus.sa_handler == SIG_IGN) return;
  if (previous_bus.sa_handler == SIG_DFL) {
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
    return;
  }
  previous_bus.sa_handler(sig);
}

static void install_bus_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_bus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &previous_bus);
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int kind; /* 0 scan, 1 copy */
  int src, dst, start_writeback;
  double *triples;
  size_t count;
  double granule;
  unsigned char *bitmap;
  size_t bitmap_len;
  double copied;
  int err;
} job;

/* flags the granules of a mapped range; `bytes` are the first `stored` bytes of the range, the rest reads zeros */
static size_t flag_mapped(job *j, const unsigned char *bytes, int64_t stored, int64_t guest, int64_t len, size_t out) {
  const int64_t g = (int64_t)j->granule;
  for (int64_t pos = 0; pos < len;) {
    int64_t gEnd = ((guest + pos) / g + 1) * g - guest;
    int64_t e = gEnd < len ? gEnd : len;
    int64_t in = e < stored ? e : stored;
    j->bitmap[out++] = (unsigned char)(in > pos && !all_zero(bytes + pos, (size_t)(in - pos)));
    pos = e;
  }
  return out;
}

/*
 * The small-granule scan of one range through a mapping; 0 when done (j->err set on SIGBUS), -1
 * when the file cannot be mapped (the caller reads instead).
 */
static int scan_mapped(job *j, int64_t file, int64_t guest, int64_t len, size_t *outp) {
  struct stat st;
  if (fstat(j->src, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  int64_t stored = st.st_size > file ? st.st_size - file : 0; /* bytes of the range the file holds */
  if (stored > len) stored = len;
  const int64_t base = file & ~(int64_t)4095;
  /* volatile: read after a jump back to sigsetjmp */
  volatile size_t mapped = (size_t)(file - base + stored);
  unsigned char *volatile map = NULL;
  if (stored > 0) {
    map = mmap(NULL, mapped, PROT_READ, MAP_SHARED | MAP_POPULATE, j->src, (off_t)base);
    if (map == MAP_FAILED) return -1;
  }
  pthread_once(&bus_once, install_bus_handler);
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) == 0) {
    scan_jump = &jump;
    *outp = flag_mapped(j, map + (file - base), stored, guest, len, *outp);
    scan_jump = NULL;
  } else {
    scan_jump = NULL;
    j->err = EIO; /* the file shrank while we read it */
  }
  if (map) munmap(map, mapped);
  return 0;
}

static void run_scan(job *j) {
  unsigned char *buf = malloc(READ_CHUNK);
  if (!buf) {
    j->err = ENOMEM;
    return;
  }
  size_t out = 0;
  const int64_t g = (int64_t)j->granule;
  for (size_t i = 0; i < j->count && !j->err; i++) {
    int64_t file = (int64_t)j->triples[3 * i], guest = (int64_t)j->triples[3 * i + 1], len = (int64_t)j->triples[3 * i + 2];
    int64_t pos = 0;
    if (g < PROBE_FROM_GRANULE && scan_mapped(j, file, guest, len, &out) == 0) {
      continue;
    } else if (g < PROBE_FROM_GRANULE) {
      /* small granules: read a piece, decide each granule inside it */
      while (pos < len && !j->err) {
        int64_t n = len - pos < READ_CHUNK ? len - pos : READ_CHUNK;
        ssize_t got = read_full(j->src, buf, (size_t)n, (off_t)(file + pos));
        if (got < 0) {
          j->err = errno;
          break;
        }
        if (got < n) memset(buf + got, 0, (size_t)(n - got));
        int64_t p = 0;
        while (p < n) {
          int64_t gEnd = ((guest + pos + p) / g + 1) * g - (guest + pos); /* end of this granule, relative to pos */
          int64_t e = gEnd < n ? gEnd : n;
          int nz = !all_zero(buf + p, (size_t)(e - p));
          /* a granule cut by the piece's end continues in the next piece: OR them */
          if (p == 0 && pos > 0 && (guest + pos) % g != 0) j->bitmap[out - 1] |= (unsigned char)nz;
          else j->bitmap[out++] = (unsigned char)nz;
          p = e;
        }
        pos += n;
      }
    } else {
      while (pos < len) {
        int64_t gEnd = ((guest + pos) / g + 1) * g - guest;
        int64_t e = gEnd < len ? gEnd : len;
        int64_t probe = e - pos < PROBE_BYTES ? e - pos : PROBE_BYTES;
        int r = has_data(j->src, buf, (off_t)(file + pos), (size_t)probe);
        if (r == 0 && e - pos > probe) r = has_data(j->src, buf, (off_t)(file + pos + probe), (size_t)(e - pos - probe));
        if (r < 0) {
          j->err = errno;
          break;
        }
        j->bitmap[out++] = (unsigned char)r;
        pos = e;
      }
    }
  }
  free(buf);
}

/* pread/pwrite where copy_file_range cannot copy between these files */
static int64_t copy_through_buffer(job *j, int64_t from, int64_t to, int64_t len, unsigned char **buf) {
  if (!*buf && !(*buf = malloc(FALLBACK_BUFFER))) {
    j->err = ENOMEM;
    return 0;
  }
  int64_t done = 0;
  while (done < len) {
    size_t k = len - done < FALLBACK_BUFFER ? (size_t)(len - done) : FALLBACK_BUFFER;
    ssize_t got = read_full(j->src, *buf, k, (off_t)(from + done));
    if (got < 0) {
      j->err = errno;
      return done;
    }
    for (ssize_t w = 0; w < got;) {
      ssize_t r = pwrite(j->dst, *buf + w, (size_t)(got - w), (off_t)(to + done + w));
      if (r < 0) {
        if (errno == EINTR) continue;
        j->err = errno;
        return done + w;
      }
      w += r;
    }
    done += got;
    if ((size_t)got < k) break;
  }
  return done;
}

typedef struct {
  int64_t lo, hi;
} span;

/* notes [at, at + n) as written; starts the writeback of what was noted once it spans WRITEBACK_EVERY */
static void written(job *j, span *wb, int64_t at, int64_t n, int last) {
  if (!j->start_writeback) return;
  if (n > 0) {
    if (wb->lo < 0 || at < wb->lo) wb->lo = at;
    if (at + n > wb->hi) wb->hi = at + n;
  }
  if (wb->lo >= 0 && (last || wb->hi - wb->lo >= WRITEBACK_EVERY)) {
    sync_file_range(j->dst, wb->lo, wb->hi - wb->lo, SYNC_FILE_RANGE_WRITE); /* a hint: its failure changes nothing */
    wb->lo = wb->hi = -1;
  }
}

static void run_copy(job *j) {
  unsigned char *buf = NULL;
  int kernel = 1;
  span wb = {-1, -1};
  for (size_t i = 0; i < j->count && !j->err; i++) {
    int64_t from = (int64_t)j->triples[3 * i], to = (int64_t)j->triples[3 * i + 1], len = (int64_t)j->triples[3 * i + 2];
    int64_t done = 0;
    while (done < len && kernel) {
      loff_t a = from + done, b = to + done;
      /* in WRITEBACK_EVERY steps when the writeback is started as we go */
      size_t want = (size_t)(len - done);
      if (j->start_writeback && want > WRITEBACK_EVERY) want = WRITEBACK_EVERY;
      ssize_t r = copy_file_range(j->src, &a, j->dst, &b, want, 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) {
          kernel = 0;
          break;
        }
        j->err = errno;
        break;
      }
      if (r == 0) break; /* the source ended */
      written(j, &wb, to + done, r, 0);
      done += r;
    }
    if (!kernel && !j->err && done < len) {
      int64_t n = copy_through_buffer(j, from + done, to + done, len - done, &buf);
      written(j, &wb, to + done, n, 0);
      done += n;
    }
    j->copied += (double)done;
  }
  if (!j->err) written(j, &wb, 0, 0, 1);
  free(buf);
}

static void execute(napi_env env, void *data) {
  job *j = data;
  if (j->kind == 0) run_scan(j);
  else run_copy(j);
}

static void complete(napi_env env, napi_status status, void *data) {
  job *j = data;
  napi_value result;
  if (status != napi_ok && !j->err) j->err = ECANCELED;
  if (j->err) {
    napi_value msg, code;
    char num[16];
    snprintf(num, sizeof num, "%d", j->err);
    napi_create_string_utf8(env, strerror(j->err), NAPI_AUTO_LENGTH, &msg);
    napi_create_string_utf8(env, num, NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, msg, &result);
    napi_reject_deferred(env, j->deferred, result);
  } else if (j->kind == 0) {
    void *out;
    napi_value ab;
    napi_create_arraybuffer(env, j->bitmap_len, &out, &ab);
    if (j->bitmap_len > 0) memcpy(out, j->bitmap, j->bitmap_len);
    napi_create_typedarray(env, napi_uint8_array, j->bitmap_len, ab, 0, &result);
    napi_resolve_deferred(env, j->deferred, result);
  } else {
    napi_create_double(env, j->copied, &result);
    napi_resolve_deferred(env, j->deferred, result);
  }
  napi_delete_async_work(env, j->work);
  free(j->triples);
  free(j->bitmap);
  free(j);
}

/* the Float64Array argument as a malloc'd copy of whole triples; NULL (and a thrown error) otherwise */
static double *triples_of(napi_env env, napi_value v, size_t *count) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array || length % 3 != 0) {
    napi_throw_type_error(env, NULL, "expected a Float64Array of triples");
    return NULL;
  }
  double *t = malloc(length > 0 ? length * sizeof(double) : 1);
  if (!t) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < length; i++) {
    double x = ((double *)data)[i];
    if (!(x >= 0 && x <= 9007199254740991.0) || x != (double)(int64_t)x) {
      free(t);
      napi_throw_range_error(env, NULL, "offsets and lengths must be non-negative integers");
      return NULL;
    }
    t[i] = x;
  }
  *count = length / 3;
  return t;
}

static napi_value queue(napi_env env, job *j) {
  napi_value promise, name;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, j->kind == 0 ? "imago.scan" : "imago.copy", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

static napi_value scan(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  double granule;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[2], &granule) != napi_ok || !(granule >= 1 && granule <= (1 << 30)) || granule != (double)(int64_t)granule) {
    napi_throw_type_error(env, NULL, "expected (fd, ranges, granule)");
    return NULL;
  }
  job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  j->kind = 0;
  j->src = fd;
  j->granule = granule;
  if (!(j->triples = triples_of(env, argv[1], &j->count))) {
    free(j);
    return NULL;
  }
  int64_t g = (int64_t)granule;
  for (size_t i = 0; i < j->count; i++) {
    int64_t guest = (int64_t)j->triples[3 * i + 1], len = (int64_t)j->triples[3 * i + 2];
    if (len > 0) j->bitmap_len += (size_t)((guest + len - 1) / g - guest / g + 1);
  }
  j->bitmap = malloc(j->bitmap_len > 0 ? j->bitmap_len : 1);
  if (!j->bitmap) {
    free(j->triples);
    free(j);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  return queue(env, j);
}

static napi_value copy(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t src, dst;
  bool wb;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_value_int32(env, argv[0], &src) != napi_ok ||
      napi_get_value_int32(env, argv[1], &dst) != napi_ok || napi_get_value_bool(env, argv[3], &wb) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (srcFd, dstFd, runs, startWriteback)");
    return NULL;
  }
  job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  j->kind = 1;
  j->src = src;
  j->dst = dst;
  j->start_writeback = wb;
  if (!(j->triples = triples_of(env, argv[2], &j->count))) {
    free(j);
    return NULL;
  }
  return queue(env, j);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "scan", NAPI_AUTO_LENGTH, scan, NULL, &fn);
  napi_set_named_property(env, exports, "scan", fn);
  napi_create_function(env, "copy", NAPI_AUTO_LENGTH, copy, NULL, &fn);
  napi_set_named_property(env, exports, "copy", fn);
  return exports;
}
