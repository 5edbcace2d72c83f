{
  "targets": [
    {
      "target_name": "seek_data",
      "sources": ["seek-data.c"]
    },
    {
      "target_name": "direct_io",
      "sources": ["direct-io.c"]
    },
    {
      "target_name": "sendfile_engine",
      "sources": ["sendfile-engine.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "wake_pipe",
      "sources": ["wake-pipe.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "copy_range",
      "sources": ["copy-range.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
