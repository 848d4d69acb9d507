# aegir %pre: the aegir system user (Fedora and EL have no sysusers scriptlet for us to rely
# on in every release). It joins the web server's group, as on Aegir 3 hosts.
getent group aegir >/dev/null || groupadd -r aegir
getent passwd aegir >/dev/null || useradd -r -g aegir -d /var/lib/aegir -M \
    -s /sbin/nologin -c "Aegir hosting control plane" aegir
for web in nginx apache www-data; do
    if getent group "$web" >/dev/null; then
        usermod -a -G "$web" aegir
    fi
done
exit 0
