# Debian 12 as the etcd VMs run it, booted with systemd. apt sees only the
# local repository in /opt/local-debs (etcd-server, etcd-client), see vm-images.sh.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV container=docker
COPY debs /opt/local-debs
RUN echo 'deb [trusted=yes] file:/opt/local-debs ./' >/etc/apt/sources.list \
 && rm -f /etc/apt/sources.list.d/* \
 && systemctl disable docker.service docker.socket containerd.service >/dev/null 2>&1 || true
COPY gce-startup gce-metadata-route /usr/local/sbin/
COPY google-startup-scripts.service gce-metadata-route.service /etc/systemd/system/
RUN systemctl enable google-startup-scripts.service gce-metadata-route.service \
 && systemctl mask getty.target console-getty.service systemd-logind.service >/dev/null 2>&1
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
