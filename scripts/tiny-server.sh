# Sourced by the end-to-end scripts (e2e.sh, web-e2e.sh). Needs BIN (the janus binary) and PORT.
# start_tiny_server [FLAGS...]: `janus serve` on the tiny model (or $TINY_MODEL) at 127.0.0.1:$PORT, waits for /ready
#   (exits the script, printing the server log, if it dies or never gets ready); the log is in
#   $JANUS_LOG_FILE and the process is killed when the script exits.
# stop_tiny_server: SIGTERM, then returns the server's exit status.
start_tiny_server() {
  JANUS_LOG_FILE=$(mktemp)
  "$BIN" serve --model "${TINY_MODEL:-assets/tiny/janus-pro-tiny}" --device cpu --host 127.0.0.1 --port "$PORT" "$@" \
    >"$JANUS_LOG_FILE" 2>&1 &
  JANUS_PID=$!
  trap 'kill $JANUS_PID 2>/dev/null || true; rm -f "$JANUS_LOG_FILE"' EXIT
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$JANUS_PID" 2>/dev/null; then echo "janus serve exited:"; cat "$JANUS_LOG_FILE"; exit 1; fi
    sleep 0.1
  done
  echo "janus serve was not ready after 30 s:"; cat "$JANUS_LOG_FILE"; exit 1
}

stop_tiny_server() {
  kill -TERM "$JANUS_PID"
  for _ in $(seq 1 100); do kill -0 "$JANUS_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$JANUS_PID"
}
