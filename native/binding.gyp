{
  "targets": [
    {
      "target_name": "ka_sockopt",
      "sources": ["ka_sockopt.c", "ka_relay.c", "ka_notify.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=c11", "-Werror=implicit-function-declaration"],
      "defines": ["NAPI_VERSION=3", "_GNU_SOURCE"]
    }
  ]
}
