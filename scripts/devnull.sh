# Sourced by the scripts: make sure /dev/null is the null device.
#
# On this workplace's machines /dev/null has been found replaced by a regular
# file (what replaced it is not known; no code of this repository refers to
# it but through redirections). Programs then read back whatever was last
# written to it: `Stdio::null()` in cargo hands rustc that text as source.
# ensure_null_device WHERE: if /dev/null is not the character device 1:3,
# say so on stderr (naming WHERE, the step just run) and, as root, recreate
# it; without root, fail.
ensure_null_device() {
    if [ -c /dev/null ] && [ "$(stat -c '%t:%T' /dev/null)" = "1:3" ]; then
        return 0
    fi
    echo "WARNING: /dev/null is not the null device (found after: $1):" \
        "$(ls -l /dev/null 2>&1)" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "ERROR: run as root to recreate /dev/null (mknod -m 666 /dev/null c 1 3)" >&2
        return 1
    fi
    rm -f /dev/null
    mknod -m 666 /dev/null c 1 3
    echo "WARNING: /dev/null recreated as the null device" >&2
}
