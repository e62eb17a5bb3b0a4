{
  "targets": [
    {
      "target_name": "ka_sockopt",
      "sources": ["ka_sockopt.c", "ka_relay.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=c11"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
