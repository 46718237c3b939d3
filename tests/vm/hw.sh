#!/bin/sh
# The virtual Pi's hardware, set up before the recorder starts (edge-vm-hw.service): a sound
# card (snd-aloop: capture from hw:Loopback,1,0 what is played into hw:Loopback,0,0) and a
# GPIO chip (gpio-sim, 32 lines, /dev/gpiochip0, each output readable in sysfs).
set -eu
modprobe snd-aloop
modprobe configfs
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
# arm64's virt machine has a PL061 GPIO chip (for its power button, whose driver run.py keeps
# from loading) at gpiochip0, where a Pi has its header and gpiozero looks: released here, so
# that the simulated chip takes number 0.
if [ -e /sys/bus/amba/drivers/pl061_gpio/9030000.pl061 ]; then
    echo 9030000.pl061 > /sys/bus/amba/drivers/pl061_gpio/unbind
fi
modprobe gpio-sim
chip=/sys/kernel/config/gpio-sim/pi
mkdir -p "$chip/bank0"
echo 32 > "$chip/bank0/num_lines"
echo 1 > "$chip/live"
udevadm settle
