# What matters of Container-Optimized OS for the worker's boot: systemd,
# Docker, a host firewall that drops incoming traffic but SSH, no package
# manager, cloud-init applying the user-data (write_files, runcmd), and
# docker-credential-gcr. /var is mounted noexec when the rehearsal boots it.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV container=docker
COPY cos-cloud-init gce-metadata-route /usr/local/sbin/
COPY docker-credential-gcr /usr/bin/docker-credential-gcr
COPY cos-cloud-init.service cos-firewall.service gce-metadata-route.service /etc/systemd/system/
RUN systemctl enable cos-firewall.service gce-metadata-route.service cos-cloud-init.service docker.service containerd.service \
 && systemctl mask getty.target console-getty.service systemd-logind.service >/dev/null 2>&1 \
 && rm -f /usr/bin/apt /usr/bin/apt-get /usr/bin/apt-cache /usr/bin/dpkg
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
