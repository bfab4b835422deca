"""Layer (b): the hardware/host contract (beat geometry and layouts, image layout, link protocol),
read by both the host side and the gateware. Imports only ``bcq.sw.formats``."""
