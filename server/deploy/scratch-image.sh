#!/usr/bin/env bash
# Builds a CPU image FROM scratch out of this machine's release binaries and the shared libraries
# they load (no base image, so no registry is needed): localhost/janus-rs:cpu-scratch. For
# machines that cannot pull the Dockerfile's base images; scripts/scale-test.sh runs its replicas
# in it with SCALE_CONTAINER=1. Needs podman (or buildah) and target/release/{janus,janus-eval}.
#
#   server/deploy/scratch-image.sh [TAG]
#   podman --runtime runc run --rm --network host -v "$PWD/assets/tiny/janus-pro-tiny:/models/tiny:ro" \
#     localhost/janus-rs:cpu-scratch serve --model /models/tiny --host 127.0.0.1 --port 8000
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${1:-localhost/janus-rs:cpu-scratch}"
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
[ -x target/release/janus ] && [ -x target/release/janus-eval ] ||
  cargo build --release --locked -p janus-server -p janus-evals
mkdir -p "$CTX/root/usr/local/bin" "$CTX/root/etc" "$CTX/root/data/hf" "$CTX/root/tmp"
cp target/release/janus target/release/janus-eval "$CTX/root/usr/local/bin/"
# Every shared library either binary loads, at the path the loader looks for it.
for lib in $(ldd target/release/janus target/release/janus-eval | awk '/=> \// {print $3} /^\t\// {print $1}' | sort -u); do
  mkdir -p "$CTX/root$(dirname "$lib")"
  cp -L "$lib" "$CTX/root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\njanus:x:10001:10001:janus:/data:/sbin/nologin\n' >"$CTX/root/etc/passwd"
printf 'root:x:0:\njanus:x:10001:\n' >"$CTX/root/etc/group"
chmod 1777 "$CTX/root/tmp"
cat >"$CTX/Containerfile" <<'CF'
FROM scratch
COPY --chown=0:0 root/ /
ENV HF_HOME=/data/hf JANUS_HOST=0.0.0.0 JANUS_PORT=8000 JANUS_DEVICE=cpu JANUS_LOG_FORMAT=json
VOLUME ["/data/hf"]
USER 10001:10001
WORKDIR /data
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/janus"]
CMD ["serve"]
CF
chown -R 10001:10001 "$CTX/root/data"
if command -v podman >/dev/null; then podman build -q -t "$TAG" "$CTX"
else buildah bud -q -t "$TAG" "$CTX"; fi
echo "built $TAG ($(du -sh "$CTX/root" | cut -f1) unpacked)"
