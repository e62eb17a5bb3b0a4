# ka-proxy image: built with the toolchain, run on a slim Node image as a non-root user.
#   docker build -t ka-proxy .
#   docker run --rm -p 15432:15432 ka-proxy --listen 15432 --target db:5432
# The build steps are config/docker/build.sh, which CI runs too.
ARG NODE_VERSION=24

FROM node:${NODE_VERSION}-bookworm AS build
# The full image has make, g++ and python3 for node-gyp.
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json LICENSE README.md ./
COPY src ./src
COPY native ./native
COPY config ./config
RUN config/docker/build.sh /app /build

FROM node:${NODE_VERSION}-bookworm-slim
ENV NODE_ENV=production
COPY --from=build /app /app
# The native helper must load on the runtime image too (same glibc line as the build stage).
RUN ["node", "/app/dist/main.js", "doctor"]
USER node
WORKDIR /app
EXPOSE 15432 9480
# node is PID 1 and gets the signals itself: SIGTERM drains (--shutdown-grace), SIGHUP reloads.
ENTRYPOINT ["node", "/app/dist/main.js"]
CMD ["--config", "/etc/ka-proxy/ka-proxy.yaml"]
