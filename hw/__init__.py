"""Layer (d): the gateware (Amaranth components), Verilog export and the unit registry."""
