{
  "targets": [
    {
      "target_name": "seek_data",
      "sources": ["seek-data.c"]
    }
  ]
}
