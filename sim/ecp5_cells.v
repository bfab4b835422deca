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
// MULT18X18D: the subset hw/pipeline.py:registered_mult instantiates: A x B (two's complement
// where SIGNEDA/SIGNEDB, else unsigned), input registers A and B and the output register each
// either "NONE" or clocked by CLK0 with enable CE0 and synchronous reset RST0 (RESETMODE "SYNC",
// the default); SOURCEA/SOURCEB 0 (the A/B pins), C unused. Any other setting stops the
// simulation rather than be simulated wrongly. tests/test_mult_cell.py runs registered_mult's
// instance form on this model against Python products.
module MULT18X18D #(
    parameter REG_INPUTA_CLK = "NONE",
    parameter REG_INPUTB_CLK = "NONE",
    parameter REG_OUTPUT_CLK = "NONE",
    parameter GSR = "ENABLED"
) (
    input  A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input  B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input  C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17,
    input  SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input  CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
    output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17,
    output P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35
);
    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] ra, rb;
    reg [35:0] rp;
    initial begin
        if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0") || (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0")
                || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0")) begin
            $display("MULT18X18D model: only NONE or CLK0 registers are modelled");
            $finish;
        end
        ra = 18'd0; rb = 18'd0; rp = 36'd0;
    end
    always @(posedge CLK0) begin
        if (SOURCEA || SOURCEB) begin
            $display("MULT18X18D model: SOURCEA/SOURCEB must be 0");
            $finish;
        end
        if (RST0) begin
            ra <= 18'd0; rb <= 18'd0; rp <= 36'd0;
        end else if (CE0) begin
            ra <= a; rb <= b; rp <= product;
        end
    end
    wire [17:0] ia = (REG_INPUTA_CLK == "CLK0") ? ra : a;
    wire [17:0] ib = (REG_INPUTB_CLK == "CLK0") ? rb : b;
    wire signed [36:0] ea = SIGNEDA ? {{19{ia[17]}}, ia} : {19'd0, ia};
    wire signed [36:0] eb = SIGNEDB ? {{19{ib[17]}}, ib} : {19'd0, ib};
    /* verilator lint_off WIDTHTRUNC */
    wire [35:0] product = ea * eb;
    /* verilator lint_on WIDTHTRUNC */
    wire [35:0] p = (REG_OUTPUT_CLK == "CLK0") ? rp : product;
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
            P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
/* verilator lint_on DECLFILENAME */
