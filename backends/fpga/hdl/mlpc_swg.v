// mlpc sliding-window generator (FINN's ConvolutionInputGenerator, with the padding inside).
// A C x H x W feature map streams in channels-last, SIMD channels of one pixel per beat (beat
// (y*W + x)*CF + cf of an image). For every output pixel (oy, ox), row-major, it emits the
// KH x KW window in (ky, kx, cf) order -- the MVAU's weight columns (ky*KW + kx)*C + c -- and
// PAD_VALUE words where the window leaves the map (PT rows above, PL columns left; below and right
// the map simply ends). The line buffer holds ROWS rows (a power of two) of WP x CFP words (W and
// CF padded to powers of two, so the address is {row mod ROWS, x, cf}). Row counters are global:
// they run on across images (mod 2^GB), an image being H rows. The writer may fill row r while
// r < (the lowest row the reader still needs) + ROWS; the reader issues a window once the writer
// has passed the window's last pixel inside the map. The memory's registered output is the output
// register (one stage): everything reading advances when it is free or being read.
module mlpc_swg #(
    parameter integer C = 1,
    parameter integer SIMD = 1,
    parameter integer IB = 2,
    parameter integer H = 8,
    parameter integer W = 8,
    parameter integer KH = 3,
    parameter integer KW = 3,
    parameter integer SH = 1,
    parameter integer SW = 1,
    parameter integer PT = 0,
    parameter integer PL = 0,
    parameter integer OH = 6,
    parameter integer OW = 6,
    parameter integer PAD_VALUE = 0,
    parameter integer ROWS = 8,
    parameter integer RAM_BLOCK = 0
) (
    input wire clk,
    input wire rst,
    input wire [SIMD*IB-1:0] in_data,
    input wire in_valid,
    output wire in_ready,
    output wire [SIMD*IB-1:0] out_data,
    output reg out_valid,
    input wire out_ready
);
    localparam integer CF = C / SIMD;
    localparam integer XBITS = $clog2(W);
    localparam integer FBITS = $clog2(CF);
    localparam integer RBITS = $clog2(ROWS);
    localparam integer AW = RBITS + XBITS + FBITS;
    localparam integer DEPTH = 1 << AW;
    localparam integer GB = $clog2(4 * (ROWS + H)) + 2;  // global rows, compared as signed differences
    localparam integer SB = $clog2(H + W + KH + KW + SH + SW + 4) + 2;  // signed geometry
    localparam integer FW = $clog2(CF + 1);
    localparam integer XW = $clog2(W + 1);
    localparam [IB-1:0] PAD_E = PAD_VALUE;

    // writer: global row, column, channel fold
    reg [GB-1:0] wrow;
    reg [XW-1:0] wx;
    reg [FW-1:0] wcf;
    // reader: output pixel, window position, channel fold; oys = oy*SH - PT, oxs = ox*SW - PL
    reg [SB-1:0] oy, ox, ky, kx;
    reg [FW-1:0] rcf;
    reg signed [SB-1:0] oys, oxs;
    reg [GB-1:0] rbase;  // global row of the reader's image's row 0

    wire signed [SB-1:0] iy = oys + $signed(ky);
    wire signed [SB-1:0] ix = oxs + $signed(kx);
    wire in_map = (iy >= 0) && (iy < H) && (ix >= 0) && (ix < W);
    wire signed [SB-1:0] iy_end = oys + KH - 1;
    wire signed [SB-1:0] ix_end = oxs + KW - 1;
    wire signed [SB-1:0] iy_last = (iy_end > H - 1) ? H - 1 : iy_end;
    wire signed [SB-1:0] ix_last = (ix_end > W - 1) ? W - 1 : ix_end;
    wire signed [SB-1:0] iy_low = (oys < 0) ? 0 : oys;
    wire [GB-1:0] iy_last_g = iy_last;  // (non-negative: sign-extended = zero-extended)
    wire [GB-1:0] iy_low_g = iy_low;
    wire [GB-1:0] iy_g = iy;
    wire [GB-1:0] last_row = rbase + iy_last_g;
    wire [GB-1:0] low_row = rbase + iy_low_g;
    wire signed [GB-1:0] ahead = wrow - last_row;  // > 0: the window's last row is complete
    wire signed [GB-1:0] span = wrow - low_row;
    wire window_ready = (ahead > 0) || (ahead == 0 && $signed({1'b0, wx}) > ix_last);
    assign in_ready = span < ROWS;

    wire adv = !out_valid || out_ready;
    wire issue = adv && window_ready;
    wire push = in_valid && in_ready;

    wire [GB-1:0] rrow = rbase + iy_g;
    wire [XW-1:0] ix_u = ix[XW-1:0];  // inside the map: 0 .. W-1
    wire [AW-1:0] waddr = ({{AW{1'b0}}, wrow[RBITS-1:0]} << (XBITS + FBITS)) | ({{AW{1'b0}}, wx} << FBITS)
                          | {{AW{1'b0}}, wcf};
    wire [AW-1:0] raddr = ({{AW{1'b0}}, rrow[RBITS-1:0]} << (XBITS + FBITS)) | ({{AW{1'b0}}, ix_u} << FBITS)
                          | {{AW{1'b0}}, rcf};
    reg [SIMD*IB-1:0] q;
    reg pad_r;
    generate
        if (RAM_BLOCK) begin : lbuf
            (* ram_style = "block" *) reg [SIMD*IB-1:0] mem [0:DEPTH-1];
            always @(posedge clk) if (push) mem[waddr] <= in_data;
            always @(posedge clk) if (adv) q <= mem[raddr];
        end else begin : lbuf
            (* ram_style = "distributed" *) reg [SIMD*IB-1:0] mem [0:DEPTH-1];
            always @(posedge clk) if (push) mem[waddr] <= in_data;
            always @(posedge clk) if (adv) q <= mem[raddr];
        end
    endgenerate
    assign out_data = pad_r ? {SIMD{PAD_E}} : q;

    always @(posedge clk) begin
        if (rst) begin
            wrow <= 0;
            wx <= 0;
            wcf <= 0;
            oy <= 0;
            ox <= 0;
            ky <= 0;
            kx <= 0;
            rcf <= 0;
            oys <= -PT;
            oxs <= -PL;
            rbase <= 0;
            out_valid <= 1'b0;
            pad_r <= 1'b0;
        end else begin
            if (push) begin
                if (wcf == CF - 1) begin
                    wcf <= 0;
                    if (wx == W - 1) begin
                        wx <= 0;
                        wrow <= wrow + 1;
                    end else begin
                        wx <= wx + 1;
                    end
                end else begin
                    wcf <= wcf + 1;
                end
            end
            if (adv) begin
                out_valid <= issue;
                pad_r <= !in_map;
            end
            if (issue) begin
                if (rcf == CF - 1) begin
                    rcf <= 0;
                    if (kx == KW - 1) begin
                        kx <= 0;
                        if (ky == KH - 1) begin
                            ky <= 0;
                            if (ox == OW - 1) begin
                                ox <= 0;
                                oxs <= -PL;
                                if (oy == OH - 1) begin
                                    oy <= 0;
                                    oys <= -PT;
                                    rbase <= rbase + H;
                                end else begin
                                    oy <= oy + 1;
                                    oys <= oys + SH;
                                end
                            end else begin
                                ox <= ox + 1;
                                oxs <= oxs + SW;
                            end
                        end else begin
                            ky <= ky + 1;
                        end
                    end else begin
                        kx <= kx + 1;
                    end
                end else begin
                    rcf <= rcf + 1;
                end
            end
        end
    end
endmodule
