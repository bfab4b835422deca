"""Layer (e): simulation (Verilator/cocotb, Amaranth), formal and synthesis runners, testbenches."""
