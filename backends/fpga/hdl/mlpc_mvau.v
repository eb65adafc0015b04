// mlpc streaming matrix-vector-activation unit (MVAU), FINN-style PE x SIMD folding.
// Generated designs instantiate it once per layer; weights and thresholds come from .mem files.
//
// Per input vector: NF = MH/PE neuron folds x SF = MW/SIMD synapse folds, one step per cycle.
// The first neuron fold reads the input stream (and keeps it in ibuf), the others reread ibuf.
// Pipeline: issue (weight RAM read, input register) -> MAC into PE accumulators -> activation
// (multi-threshold count, or accumulator + offset) into the output register. Every register
// advances only when the output register is free or being read (adv), so valid/ready
// backpressure stalls the whole unit. Weight word at nf*SF+sf holds W[nf*PE+p][sf*SIMD+s] at
// bits (p*SIMD+s)*WB; threshold word nf holds T[nf*PE+p][t] at bits (p*NT+t)*TB.
module mlpc_mvau #(
    parameter integer MW = 4,
    parameter integer MH = 4,
    parameter integer PE = 1,
    parameter integer SIMD = 1,
    parameter integer IB = 2,
    parameter integer IN_SIGNED = 0,
    parameter integer WB = 2,
    parameter integer W_SIGNED = 1,
    parameter integer AB = 16,
    parameter integer OB = 2,
    parameter integer HAS_ACT = 1,
    parameter integer NT = 3,
    parameter integer TB = 16,
    parameter integer OUT_MIN = 0,
    parameter integer RAM_BLOCK = 0,
    parameter WEIGHT_FILE = "w.mem",
    parameter THRESH_FILE = "t.mem"
) (
    input wire clk,
    input wire rst,
    input wire [SIMD*IB-1:0] in_data,
    input wire in_valid,
    output wire in_ready,
    output reg [PE*OB-1:0] out_data,
    output reg out_valid,
    input wire out_ready
);
    localparam integer SF = MW / SIMD;
    localparam integer NF = MH / PE;
    localparam integer WDEPTH = SF * NF;
    localparam integer WW = PE * SIMD * WB;
    localparam integer TW = PE * NT * TB;
    localparam integer CB = (SF > NF ? $clog2(SF + 1) : $clog2(NF + 1)) + 1;
    localparam integer AW = $clog2(WDEPTH + 1) + 1;

    reg [CB-1:0] sf, nf;
    reg [AW-1:0] waddr;
    wire adv = !out_valid || out_ready;
    wire need_in = (nf == 0);
    wire issue = adv && (!need_in || in_valid);
    assign in_ready = adv && need_in;

    // the input buffer (reread for neuron folds after the first); deeper than 64 words it is left
    // to logic: yosys' LUT-RAM mapper rejects e.g. a 512 x 2 single-port memory (CNV's fc layers)
    localparam integer IBUF_LOGIC = SF > 64;
    wire ibuf_we = !rst && adv && issue && need_in;
    wire [SIMD*IB-1:0] ibuf_q;
    generate
        if (IBUF_LOGIC) begin : ibuf
            (* ram_style = "logic" *) reg [SIMD*IB-1:0] mem [0:SF-1];
            always @(posedge clk) if (ibuf_we) mem[sf] <= in_data;
            assign ibuf_q = mem[sf];
        end else begin : ibuf
            reg [SIMD*IB-1:0] mem [0:SF-1];
            always @(posedge clk) if (ibuf_we) mem[sf] <= in_data;
            assign ibuf_q = mem[sf];
        end
    endgenerate
    reg [SIMD*IB-1:0] s1_x;
    reg [WW-1:0] s1_w;
    reg s1_valid, s1_first, s1_last;
    reg [CB-1:0] s1_nf;
    reg s2_valid;
    reg [CB-1:0] s2_nf;

    generate
        if (RAM_BLOCK) begin : wrom
            (* ram_style = "block", rom_style = "block" *) reg [WW-1:0] mem [0:WDEPTH-1];
            initial $readmemh(WEIGHT_FILE, mem);
            always @(posedge clk) if (adv) s1_w <= mem[waddr];
        end else begin : wrom
            (* rom_style = "logic" *) reg [WW-1:0] mem [0:WDEPTH-1];
            initial $readmemh(WEIGHT_FILE, mem);
            always @(posedge clk) if (adv) s1_w <= mem[waddr];
        end
    endgenerate

    reg [TW-1:0] tmem [0:NF-1];
    initial $readmemh(THRESH_FILE, tmem);
    wire [TW-1:0] trow = tmem[s2_nf];

    always @(posedge clk) begin
        if (rst) begin
            sf <= 0;
            nf <= 0;
            waddr <= 0;
            s1_valid <= 1'b0;
            s2_valid <= 1'b0;
            out_valid <= 1'b0;
        end else if (adv) begin
            s1_valid <= issue;
            s2_valid <= s1_valid && s1_last;
            s2_nf <= s1_nf;
            out_valid <= s2_valid;
            if (issue) begin
                s1_x <= need_in ? in_data : ibuf_q;
                s1_first <= (sf == 0);
                s1_last <= (sf == SF - 1);
                s1_nf <= nf;
                if (sf == SF - 1) begin
                    sf <= 0;
                    nf <= (nf == NF - 1) ? 0 : nf + 1;
                end else begin
                    sf <= sf + 1;
                end
                waddr <= (waddr == WDEPTH - 1) ? 0 : waddr + 1;
            end
        end
    end

    wire [PE*OB-1:0] act;
    genvar p, s;
    generate
        for (p = 0; p < PE; p = p + 1) begin : pe
            wire [(SIMD+1)*AB-1:0] part;
            assign part[AB-1:0] = {AB{1'b0}};
            for (s = 0; s < SIMD; s = s + 1) begin : lane
                wire [IB-1:0] xe = s1_x[s*IB +: IB];
                wire [WB-1:0] we = s1_w[(p*SIMD+s)*WB +: WB];
                wire signed [IB:0] xs = IN_SIGNED ? $signed({xe[IB-1], xe}) : $signed({1'b0, xe});
                wire signed [WB:0] ws = W_SIGNED ? $signed({we[WB-1], we}) : $signed({1'b0, we});
                wire signed [IB+WB+1:0] prod = xs * ws;
                wire signed [AB-1:0] prod_ext = prod;
                assign part[(s+1)*AB +: AB] = part[s*AB +: AB] + prod_ext;
            end
            reg signed [AB-1:0] acc;
            always @(posedge clk) if (adv && s1_valid) acc <= (s1_first ? {AB{1'b0}} : acc) + part[SIMD*AB +: AB];
            if (HAS_ACT) begin : thr
                reg [15:0] count;
                integer t;
                always @* begin
                    count = 16'd0;
                    for (t = 0; t < NT; t = t + 1)
                        count = count + ((acc >= $signed(trow[(p*NT+t)*TB +: TB])) ? 16'd1 : 16'd0);
                end
                wire signed [31:0] level = OUT_MIN + $signed({16'd0, count});
                assign act[p*OB +: OB] = level[OB-1:0];
            end else begin : noact
                wire signed [TB-1:0] off = trow[p*TB +: TB];
                wire signed [TB-1:0] acc_ext = acc;
                wire signed [TB-1:0] sum = acc_ext + off;
                assign act[p*OB +: OB] = sum[OB-1:0];
            end
        end
    endgenerate

    always @(posedge clk) if (adv && s2_valid) out_data <= act;
endmodule
