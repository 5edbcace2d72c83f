{
  "targets": [
    {
      "target_name": "seek_data",
      "sources": ["seek-data.c"]
    },
    {
      "target_name": "direct_io",
      "sources": ["direct-io.c"]
    }
  ]
}
