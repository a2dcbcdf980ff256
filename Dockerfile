# The alien-manager image: the static release binary on an empty base (docs/container-image.md).
#
#   cargo xtask image manager          # builds the binary and the tree added below
#   podman build -t alien-manager .    # or docker build; works offline
#
# `cargo xtask image manager` also writes the same image as an OCI layout without a daemon
# (target/images/alien-manager/oci). No shell in the image: the health check is the binary's own.
FROM scratch
# The tree as a tar: ADD keeps its owners and modes (/data is the manager user's, mode 0700).
ADD target/images/alien-manager/rootfs.tar /
USER 10001:10001
WORKDIR /app
ENV PATH=/usr/local/bin
VOLUME /data
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/alien-manager", "health"]
ENTRYPOINT ["/usr/local/bin/alien-manager"]
CMD ["serve"]
