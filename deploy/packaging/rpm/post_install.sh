# cargo-generate-rpm packages no symlinks, so the applet links are made here (and removed by
# post_uninstall); then the units, preset and udev rule are made known. No unit is started and
# no engine restarted.
for applet in $(/usr/bin/nvbox --list); do
    ln -sfn nvbox "/usr/bin/$applet"
done
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl preset nvidia-cdi-refresh.path nvidia-cdi-refresh.service >/dev/null 2>&1 || :
    fi
fi
command -v udevadm >/dev/null 2>&1 && udevadm control --reload-rules >/dev/null 2>&1 || :
