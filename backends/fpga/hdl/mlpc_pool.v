// mlpc streaming max pool (FINN's StreamingMaxPool): a C x H x W integer feature map streams in
// channels-last, PE channels of one pixel per beat; KH x KW windows with stride = kernel, rows and
// columns past the last full window dropped (MaxPool's floor mode). A row of OW*CF partial maxima
// (LUT-RAM) is updated with every beat; the beat that completes a window (ky = KH-1, kx = KW-1)
// leaves as an output beat. One input beat per cycle; the input waits while an output is unread.
module mlpc_pool #(
    parameter integer C = 1,
    parameter integer PE = 1,
    parameter integer B = 2,
    parameter integer SIGNED = 0,
    parameter integer H = 8,
    parameter integer W = 8,
    parameter integer KH = 2,
    parameter integer KW = 2,
    parameter integer OH = 4,
    parameter integer OW = 4
) (
    input wire clk,
    input wire rst,
    input wire [PE*B-1:0] in_data,
    input wire in_valid,
    output wire in_ready,
    output reg [PE*B-1:0] out_data,
    output reg out_valid,
    input wire out_ready
);
    localparam integer CF = C / PE;
    localparam integer CB = $clog2(H + W + C + KH + KW + OW * CF + 2) + 1;
    reg [CB-1:0] cf, x, kx, px, y, ky, py, pbase;
    (* ram_style = "distributed" *) reg [PE*B-1:0] row [0:OW*CF-1];
    wire [CB-1:0] aidx = pbase + cf;
    wire [PE*B-1:0] prev = row[aidx];
    wire in_win = (py < OH) && (px < OW);
    wire first = (ky == 0) && (kx == 0);
    wire last = (ky == KH - 1) && (kx == KW - 1);
    wire adv = !out_valid || out_ready;
    assign in_ready = adv;
    wire push = in_valid && adv;

    wire [PE*B-1:0] m;
    genvar p;
    generate
        for (p = 0; p < PE; p = p + 1) begin : lane
            wire [B-1:0] a = in_data[p*B +: B];
            wire [B-1:0] b = prev[p*B +: B];
            wire a_ge = SIGNED ? ($signed(a) >= $signed(b)) : (a >= b);
            assign m[p*B +: B] = (first || a_ge) ? a : b;
        end
    endgenerate

    always @(posedge clk) if (push && in_win) row[aidx] <= m;

    always @(posedge clk) begin
        if (rst) begin
            cf <= 0;
            x <= 0;
            kx <= 0;
            px <= 0;
            y <= 0;
            ky <= 0;
            py <= 0;
            pbase <= 0;
            out_valid <= 1'b0;
        end else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (push) begin
                if (in_win && last) begin
                    out_data <= m;
                    out_valid <= 1'b1;
                end
                if (cf == CF - 1) begin
                    cf <= 0;
                    if (x == W - 1) begin
                        x <= 0;
                        kx <= 0;
                        px <= 0;
                        pbase <= 0;
                        if (y == H - 1) begin
                            y <= 0;
                            ky <= 0;
                            py <= 0;
                        end else if (ky == KH - 1) begin
                            y <= y + 1;
                            ky <= 0;
                            py <= py + 1;
                        end else begin
                            y <= y + 1;
                            ky <= ky + 1;
                        end
                    end else begin
                        x <= x + 1;
                        if (kx == KW - 1) begin
                            kx <= 0;
                            px <= px + 1;
                            pbase <= pbase + CF;
                        end else begin
                            kx <= kx + 1;
                        end
                    end
                end else begin
                    cf <= cf + 1;
                end
            end
        end
    end
endmodule
