// Behavioural models of the ECP5 primitives that bcq gateware instantiates, for simulators only
// (Verilator, Icarus). Synthesis never reads this file: Yosys maps the instances onto its own
// ECP5 cells. The simulated design text is byte for byte the synthesized one; this file is
// appended after it (sim/runner.py: with_cell_models).
//
// CCU2C: two LUT4-plus-carry halves, the function of Yosys's share/ecp5/ccu2c_sim.vh (ISC):
//   f = LUT4(INIT)(A, B, C, D); S = f ^ CIN; COUT = f ? CIN : LUT2(INIT[3:0])(A, B)
// (INJECT1 = "YES" gates the carry in and the generate off). tests/test_chains.py proves the
// generated CCU2C netlist equal, with Yosys's own cell model, to the Amaranth model of the cell.
/* verilator lint_off DECLFILENAME */
module CCU2C #(
    parameter [15:0] INIT0 = 16'h0000,
    parameter [15:0] INIT1 = 16'h0000,
    parameter INJECT1_0 = "YES",
    parameter INJECT1_1 = "YES"
) (
    input  CIN,
    input  A0, B0, C0, D0, A1, B1, C1, D1,
    output S0, S1,
    output COUT
);
    wire f0 = INIT0[{D0, C0, B0, A0}];
    wire g0 = INIT0[{2'b00, B0, A0}];
    wire inj0 = (INJECT1_0 == "YES");
    wire cout0 = f0 ? CIN : (inj0 ? 1'b0 : g0);
    assign S0 = f0 ^ (inj0 ? 1'b0 : CIN);
    wire f1 = INIT1[{D1, C1, B1, A1}];
    wire g1 = INIT1[{2'b00, B1, A1}];
    wire inj1 = (INJECT1_1 == "YES");
    assign COUT = f1 ? cout0 : (inj1 ? 1'b0 : g1);
    assign S1 = f1 ^ (inj1 ? 1'b0 : cout0);
endmodule
/* verilator lint_on DECLFILENAME */
