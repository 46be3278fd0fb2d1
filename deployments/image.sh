#!/usr/bin/env bash
# Builds the sriov-cdi container image from deployments/Dockerfile with docker (BuildKit) or
# buildah, whichever works here, for users with a container engine. Without a working engine
# it fails: `make image` builds the same image with no engine at all (deployments/imagebuild).
#
#   deployments/image.sh                       # tags sriov-cdi:<git describe>
#   IMAGE=ghcr.io/me/sriov-cdi:v0.1.0 deployments/image.sh
#   ENGINE=buildah deployments/image.sh
#   PUSH=1 IMAGE=... deployments/image.sh      # push after building
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
IMAGE=${IMAGE:-sriov-cdi:$VERSION}

engine_works() {
	case $1 in
	docker) command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 ;;
	buildah) command -v buildah >/dev/null 2>&1 && buildah info >/dev/null 2>&1 ;;
	*) return 1 ;;
	esac
}

engine=${ENGINE:-}
if [[ -n $engine ]]; then
	engine_works "$engine" || { echo "image: ENGINE=$engine does not work here (not installed, or no daemon/permission)" >&2; exit 1; }
else
	for e in docker buildah; do
		if engine_works "$e"; then engine=$e; break; fi
	done
fi
if [[ -z $engine ]]; then
	why=()
	command -v docker >/dev/null 2>&1 && why+=("docker is installed but \`docker info\` fails (no daemon?)") || why+=("no docker")
	command -v buildah >/dev/null 2>&1 && why+=("buildah is installed but \`buildah info\` fails") || why+=("no buildah")
	echo "image: no container engine works here (${why[0]}; ${why[1]}); \`make image\` builds the same image without one" >&2
	exit 1
fi

echo "image: building $IMAGE (version $VERSION) with $engine"
case $engine in
docker)
	DOCKER_BUILDKIT=1 docker build -f deployments/Dockerfile --build-arg "VERSION=$VERSION" -t "$IMAGE" .
	[[ ${PUSH:-} != 1 ]] || docker push "$IMAGE"
	;;
buildah)
	buildah build --layers -f deployments/Dockerfile --build-arg "VERSION=$VERSION" -t "$IMAGE" .
	[[ ${PUSH:-} != 1 ]] || buildah push "$IMAGE"
	;;
esac
echo "image: built $IMAGE"
