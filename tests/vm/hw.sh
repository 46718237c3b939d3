#!/bin/sh
# The virtual Pi's hardware, set up before the recorder starts (edge-vm-hw.service): a sound
# card (snd-aloop: capture from hw:Loopback,1,0 what is played into hw:Loopback,0,0) and a
# GPIO chip (gpio-sim, 32 lines, /dev/gpiochip0, each output readable in sysfs).
set -eu
modprobe snd-aloop
modprobe configfs
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
modprobe gpio-sim
chip=/sys/kernel/config/gpio-sim/pi
mkdir -p "$chip/bank0"
echo 32 > "$chip/bank0/num_lines"
echo 1 > "$chip/live"
udevadm settle
