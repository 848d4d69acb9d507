# aegir %preun, as systemd's %systemd_preun: $1 is 0 on erase (stop and disable), 1 on upgrade.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now aegird.service >/dev/null 2>&1 || :
fi
exit 0
