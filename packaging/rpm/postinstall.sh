# aegir %post, as systemd's %systemd_post with enabling: $1 is 1 on install, 2+ on upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    systemd-tmpfiles --create aegir.conf >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now aegird.service >/dev/null 2>&1 || :
    fi
else
    install -d -m 0700 -o aegir -g aegir /var/lib/aegir /var/lib/aegir/backups
fi
exit 0
