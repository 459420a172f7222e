//go:build amd64 && !purego

#include "textflag.h"

// AES-256-GCM kernels on 512-bit registers (VAES, VPCLMULQDQ, AVX-512 F, BW
// and VL): CTR keystream 16 blocks at a time and GHASH 16 blocks per
// reduction. GHASH works in the byte-reflected domain of crypto/aes's
// gcm_amd64.s: blocks are byte-reversed (VPSHUFB bswapMask), the hash key
// powers are byte-reversed and doubled modulo the polynomial, and every
// product is reduced with gcmPoly in two folding steps.

// bswapMask reverses the 16 bytes of a 128-bit lane.
DATA bswapMask<>+0(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+8(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $16

// gcmPoly is GHASH's reduction constant in the reflected domain.
DATA gcmPoly<>+0(SB)/8, $0x0000000000000001
DATA gcmPoly<>+8(SB)/8, $0xc200000000000000
GLOBL gcmPoly<>(SB), RODATA|NOPTR, $16

// ctrLanes adds 0, 1, 2 and 3 to the counters of lanes 0 to 3: a counter
// block byte-reversed holds its 32-bit block counter in dword 0.
DATA ctrLanes<>+0(SB)/8, $0
DATA ctrLanes<>+8(SB)/8, $0
DATA ctrLanes<>+16(SB)/8, $1
DATA ctrLanes<>+24(SB)/8, $0
DATA ctrLanes<>+32(SB)/8, $2
DATA ctrLanes<>+40(SB)/8, $0
DATA ctrLanes<>+48(SB)/8, $3
DATA ctrLanes<>+56(SB)/8, $0
GLOBL ctrLanes<>(SB), RODATA|NOPTR, $64

// ctrFour advances a lane's counter by four blocks.
DATA ctrFour<>+0(SB)/8, $4
DATA ctrFour<>+8(SB)/8, $0
GLOBL ctrFour<>(SB), RODATA|NOPTR, $16

// func subWord(w uint32) uint32
TEXT ·subWord(SB), NOSPLIT, $0-12
	MOVL            w+0(FP), AX
	MOVQ            AX, X0
	PSHUFD          $0, X0, X0
	AESKEYGENASSIST $0, X0, X1
	MOVQ            X1, AX
	MOVL            AX, ret+8(FP)
	RET

// ENC1 runs the 14 rounds of AES-256 on four blocks in z; the round keys
// are broadcast in Z16-Z30.
#define ENC1(z) \
	VPXORQ      Z16, z, z; \
	VAESENC     Z17, z, z; \
	VAESENC     Z18, z, z; \
	VAESENC     Z19, z, z; \
	VAESENC     Z20, z, z; \
	VAESENC     Z21, z, z; \
	VAESENC     Z22, z, z; \
	VAESENC     Z23, z, z; \
	VAESENC     Z24, z, z; \
	VAESENC     Z25, z, z; \
	VAESENC     Z26, z, z; \
	VAESENC     Z27, z, z; \
	VAESENC     Z28, z, z; \
	VAESENC     Z29, z, z; \
	VAESENCLAST Z30, z, z

#define ROUND4(k) \
	VAESENC k, Z4, Z4; \
	VAESENC k, Z5, Z5; \
	VAESENC k, Z6, Z6; \
	VAESENC k, Z7, Z7

// func ctrXOR(rk *[240]byte, ctr *[16]byte, dst *byte, src *byte, n int)
TEXT ·ctrXOR(SB), NOSPLIT, $0-40
	MOVQ rk+0(FP), AX
	MOVQ ctr+8(FP), DX
	MOVQ dst+16(FP), DI
	MOVQ src+24(FP), SI
	MOVQ n+32(FP), CX

	VBROADCASTI32X4 bswapMask<>+0(SB), Z31
	VBROADCASTI32X4 0(AX), Z16
	VBROADCASTI32X4 16(AX), Z17
	VBROADCASTI32X4 32(AX), Z18
	VBROADCASTI32X4 48(AX), Z19
	VBROADCASTI32X4 64(AX), Z20
	VBROADCASTI32X4 80(AX), Z21
	VBROADCASTI32X4 96(AX), Z22
	VBROADCASTI32X4 112(AX), Z23
	VBROADCASTI32X4 128(AX), Z24
	VBROADCASTI32X4 144(AX), Z25
	VBROADCASTI32X4 160(AX), Z26
	VBROADCASTI32X4 176(AX), Z27
	VBROADCASTI32X4 192(AX), Z28
	VBROADCASTI32X4 208(AX), Z29
	VBROADCASTI32X4 224(AX), Z30
	VBROADCASTI32X4 ctrFour<>+0(SB), Z12

	// Z2: the counters of the next four blocks, byte-reversed.
	VBROADCASTI32X4 (DX), Z2
	VPSHUFB         Z31, Z2, Z2
	VPADDD          ctrLanes<>+0(SB), Z2, Z2

ctrLoop16:
	CMPQ    CX, $256
	JB      ctrLoop4
	VPSHUFB Z31, Z2, Z4
	VPADDD  Z12, Z2, Z2
	VPSHUFB Z31, Z2, Z5
	VPADDD  Z12, Z2, Z2
	VPSHUFB Z31, Z2, Z6
	VPADDD  Z12, Z2, Z2
	VPSHUFB Z31, Z2, Z7
	VPADDD  Z12, Z2, Z2
	VPXORQ  Z16, Z4, Z4
	VPXORQ  Z16, Z5, Z5
	VPXORQ  Z16, Z6, Z6
	VPXORQ  Z16, Z7, Z7
	ROUND4(Z17)
	ROUND4(Z18)
	ROUND4(Z19)
	ROUND4(Z20)
	ROUND4(Z21)
	ROUND4(Z22)
	ROUND4(Z23)
	ROUND4(Z24)
	ROUND4(Z25)
	ROUND4(Z26)
	ROUND4(Z27)
	ROUND4(Z28)
	ROUND4(Z29)
	VAESENCLAST Z30, Z4, Z4
	VAESENCLAST Z30, Z5, Z5
	VAESENCLAST Z30, Z6, Z6
	VAESENCLAST Z30, Z7, Z7
	VPXORQ      0(SI), Z4, Z4
	VPXORQ      64(SI), Z5, Z5
	VPXORQ      128(SI), Z6, Z6
	VPXORQ      192(SI), Z7, Z7
	VMOVDQU64   Z4, 0(DI)
	VMOVDQU64   Z5, 64(DI)
	VMOVDQU64   Z6, 128(DI)
	VMOVDQU64   Z7, 192(DI)
	ADDQ        $256, SI
	ADDQ        $256, DI
	SUBQ        $256, CX
	JMP         ctrLoop16

ctrLoop4:
	CMPQ      CX, $64
	JB        ctrTail
	VPSHUFB   Z31, Z2, Z4
	VPADDD    Z12, Z2, Z2
	ENC1(Z4)
	VPXORQ    (SI), Z4, Z4
	VMOVDQU64 Z4, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $64, CX
	JMP       ctrLoop4

ctrTail:
	// The last 1 to 63 bytes, loaded and stored under a byte mask.
	TESTQ      CX, CX
	JZ         ctrDone
	MOVQ       $1, BX
	SHLQ       CX, BX
	DECQ       BX
	KMOVQ      BX, K1
	VPSHUFB    Z31, Z2, Z4
	ENC1(Z4)
	VMOVDQU8.Z (SI), K1, Z5
	VPXORQ     Z5, Z4, Z4
	VMOVDQU8   Z4, K1, (DI)

ctrDone:
	VZEROUPPER
	RET

// FOLD xors the four 128-bit lanes of z (whose lower halves are y and x)
// into x.
#define FOLD(z, y, x) \
	VEXTRACTI64X4 $1, z, Y8; \
	VPXOR         Y8, y, y; \
	VEXTRACTI128  $1, y, X8; \
	VPXOR         X8, x, x

// REDUCE takes a product as its low (X5), high (X6) and middle (X7)
// carry-less partial products and leaves it reduced in X0 (zeroing Z0's
// upper lanes).
#define REDUCE \
	VPSLLDQ    $8, X7, X8; \
	VPSRLDQ    $8, X7, X7; \
	VPXOR      X8, X5, X5; \
	VPXOR      X7, X6, X6; \
	VPCLMULQDQ $0x01, X5, X15, X8; \
	VPSHUFD    $0x4e, X5, X5; \
	VPXOR      X8, X5, X5; \
	VPCLMULQDQ $0x01, X5, X15, X8; \
	VPSHUFD    $0x4e, X5, X5; \
	VPXOR      X8, X5, X5; \
	VPXOR      X6, X5, X0

// MUL4(d, h) accumulates the partial products of four blocks in d with the
// four key powers in h into Z5 (low), Z6 (high) and Z7 (middle).
#define MUL4(d, h) \
	VPCLMULQDQ $0x00, h, d, Z9; \
	VPCLMULQDQ $0x11, h, d, Z10; \
	VPCLMULQDQ $0x01, h, d, Z11; \
	VPCLMULQDQ $0x10, h, d, Z12; \
	VPXORQ     Z9, Z5, Z5; \
	VPXORQ     Z10, Z6, Z6; \
	VPTERNLOGD $0x96, Z11, Z12, Z7

// MUL1 hashes the byte-reversed block in X1 into the accumulator X0 with
// H (X14).
#define MUL1 \
	VPXOR      X0, X1, X1; \
	VPCLMULQDQ $0x00, X14, X1, X5; \
	VPCLMULQDQ $0x11, X14, X1, X6; \
	VPCLMULQDQ $0x01, X14, X1, X7; \
	VPCLMULQDQ $0x10, X14, X1, X8; \
	VPXOR      X8, X7, X7; \
	REDUCE

// func ghashUpdate(htab *[256]byte, acc *[16]byte, p *byte, n int)
TEXT ·ghashUpdate(SB), NOSPLIT, $0-32
	MOVQ htab+0(FP), AX
	MOVQ acc+8(FP), DX
	MOVQ p+16(FP), SI
	MOVQ n+24(FP), CX

	VBROADCASTI32X4 bswapMask<>+0(SB), Z13
	VMOVDQU         gcmPoly<>+0(SB), X15
	VMOVDQU64       0(AX), Z24
	VMOVDQU64       64(AX), Z25
	VMOVDQU64       128(AX), Z26
	VMOVDQU64       192(AX), Z27
	VMOVDQU         240(AX), X14
	VMOVDQU         (DX), X0
	VPSHUFB         X13, X0, X0

ghLoop16:
	CMPQ      CX, $256
	JB        ghLoop4
	VMOVDQU64 0(SI), Z1
	VMOVDQU64 64(SI), Z2
	VMOVDQU64 128(SI), Z3
	VMOVDQU64 192(SI), Z4
	VPSHUFB   Z13, Z1, Z1
	VPSHUFB   Z13, Z2, Z2
	VPSHUFB   Z13, Z3, Z3
	VPSHUFB   Z13, Z4, Z4
	VPXORQ    Z0, Z1, Z1
	VPCLMULQDQ $0x00, Z24, Z1, Z5
	VPCLMULQDQ $0x11, Z24, Z1, Z6
	VPCLMULQDQ $0x01, Z24, Z1, Z7
	VPCLMULQDQ $0x10, Z24, Z1, Z8
	VPXORQ     Z8, Z7, Z7
	MUL4(Z2, Z25)
	MUL4(Z3, Z26)
	MUL4(Z4, Z27)
	FOLD(Z5, Y5, X5)
	FOLD(Z6, Y6, X6)
	FOLD(Z7, Y7, X7)
	REDUCE
	ADDQ $256, SI
	SUBQ $256, CX
	JMP  ghLoop16

ghLoop4:
	CMPQ       CX, $64
	JB         ghLoop1
	VMOVDQU64  (SI), Z1
	VPSHUFB    Z13, Z1, Z1
	VPXORQ     Z0, Z1, Z1
	VPCLMULQDQ $0x00, Z27, Z1, Z5
	VPCLMULQDQ $0x11, Z27, Z1, Z6
	VPCLMULQDQ $0x01, Z27, Z1, Z7
	VPCLMULQDQ $0x10, Z27, Z1, Z8
	VPXORQ     Z8, Z7, Z7
	FOLD(Z5, Y5, X5)
	FOLD(Z6, Y6, X6)
	FOLD(Z7, Y7, X7)
	REDUCE
	ADDQ       $64, SI
	SUBQ       $64, CX
	JMP        ghLoop4

ghLoop1:
	CMPQ    CX, $16
	JB      ghPartial
	VMOVDQU (SI), X1
	VPSHUFB X13, X1, X1
	MUL1
	ADDQ    $16, SI
	SUBQ    $16, CX
	JMP     ghLoop1

ghPartial:
	// A last partial block is hashed zero-padded.
	TESTQ      CX, CX
	JZ         ghDone
	MOVQ       $1, BX
	SHLQ       CX, BX
	DECQ       BX
	KMOVQ      BX, K1
	VMOVDQU8.Z (SI), K1, X1
	VPSHUFB    X13, X1, X1
	MUL1

ghDone:
	VPSHUFB X13, X0, X0
	VMOVDQU X0, (DX)
	VZEROUPPER
	RET
