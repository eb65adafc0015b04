// mlpc stream FIFO: DEPTH words of W bits, valid/ready on both sides, registered storage.
module mlpc_fifo #(
    parameter integer W = 8,
    parameter integer DEPTH = 4
) (
    input wire clk,
    input wire rst,
    input wire [W-1:0] in_data,
    input wire in_valid,
    output wire in_ready,
    output wire [W-1:0] out_data,
    output wire out_valid,
    input wire out_ready
);
    localparam integer PW = $clog2(DEPTH) + 1;
    reg [W-1:0] mem [0:DEPTH-1];
    reg [PW-1:0] rd, wr, count;
    assign in_ready = count < DEPTH;
    assign out_valid = count != 0;
    assign out_data = mem[rd];
    wire push = in_valid && in_ready;
    wire pop = out_valid && out_ready;
    always @(posedge clk) begin
        if (rst) begin
            rd <= 0;
            wr <= 0;
            count <= 0;
        end else begin
            if (push) begin
                mem[wr] <= in_data;
                wr <= (wr == DEPTH - 1) ? 0 : wr + 1;
            end
            if (pop) rd <= (rd == DEPTH - 1) ? 0 : rd + 1;
            count <= count + (push ? 1 : 0) - (pop ? 1 : 0);
        end
    end
`ifdef VERILATOR
    // simulation only, printed when the testbench ends: the highest occupancy; the depth this
    // run needed (one more than the occupancy before the fullest push: a full FIFO refuses a
    // push even while it pops); the cycles a producer offered a beat the full FIFO refused
    reg [PW-1:0] peak, need;
    reg [31:0] blocked;
    always @(posedge clk) begin
        if (rst) begin
            peak <= 0;
            need <= 0;
            blocked <= 0;
        end else begin
            if (count > peak) peak <= count;
            if (push && count + 1 > need) need <= count + 1;
            if (in_valid && !in_ready) blocked <= blocked + 1;
        end
    end
    final $display("fifo-peak %m %0d %0d %0d %0d", peak, DEPTH, need, blocked);
`endif
endmodule
