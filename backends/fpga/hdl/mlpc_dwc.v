// mlpc stream width converter: beats of IN_N elements to beats of OUT_N elements (EB bits each),
// elements kept in order (element 0 in the low bits). Holds up to CAP = 2*(IN_N+OUT_N) elements.
module mlpc_dwc #(
    parameter integer EB = 2,
    parameter integer IN_N = 1,
    parameter integer OUT_N = 1
) (
    input wire clk,
    input wire rst,
    input wire [IN_N*EB-1:0] in_data,
    input wire in_valid,
    output wire in_ready,
    output wire [OUT_N*EB-1:0] out_data,
    output wire out_valid,
    input wire out_ready
);
    localparam integer CAP = 2 * (IN_N + OUT_N);
    localparam integer CW = $clog2(CAP + 1) + 1;
    reg [CAP*EB-1:0] buffer;
    reg [CW-1:0] count;
    assign out_valid = count >= OUT_N;
    assign out_data = buffer[OUT_N*EB-1:0];
    assign in_ready = count + IN_N <= CAP;
    wire pop = out_valid && out_ready;
    wire push = in_valid && in_ready;
    wire [CAP*EB-1:0] shifted = pop ? (buffer >> (OUT_N*EB)) : buffer;
    wire [CW-1:0] kept = pop ? count - OUT_N : count;
    wire [CAP*EB-1:0] incoming = {{(CAP-IN_N)*EB{1'b0}}, in_data};
    always @(posedge clk) begin
        if (rst) begin
            buffer <= {CAP*EB{1'b0}};
            count <= 0;
        end else begin
            buffer <= push ? (shifted | (incoming << (kept * EB))) : shifted;
            count <= kept + (push ? IN_N : 0);
        end
    end
endmodule
