# aegir %postun, as systemd's %systemd_postun_with_restart: $1 is 1+ after an upgrade (restart
# the new aegird, which migrates the store), 0 after erase. /var/lib/aegir is kept on erase:
# RPM has no purge, so the store and backups are removed by hand only.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart aegird.service >/dev/null 2>&1 || :
    fi
fi
exit 0
