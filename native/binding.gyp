{
  "targets": [
    {
      "target_name": "ka_native",
      "sources": ["ka_native.c", "ka_sockopt.c", "ka_pump.c", "ka_relay.c", "ka_accept.c", "ka_notify.c", "ka_fdpass.c", "ka_aead.c", "ka_send.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=c11", "-Werror=implicit-function-declaration"],
      # N-API 8 (Node 12.22 and later, every supported line): the pump's async cleanup hook closes
      # its handles when a worker thread that used it exits; each thread keeps its pump as the
      # addon's instance data (N-API 6).
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "libraries": ["-lm"]
    }
  ]
}
