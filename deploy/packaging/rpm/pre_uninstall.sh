# Last version erased ($1 = 0, not an upgrade): disable the units and drop the applet links
# while the binary can still list them.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable nvidia-cdi-refresh.path nvidia-cdi-refresh.service >/dev/null 2>&1 || :
    fi
    for applet in $(/usr/bin/nvbox --list); do
        [ -L "/usr/bin/$applet" ] && rm -f "/usr/bin/$applet"
    done
fi
:
