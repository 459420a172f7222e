//go:build amd64 && !purego

#include "textflag.h"

// Table offsets in rabinTables.
#define MOD 0
#define MODA 2048
#define OUT1 4096
#define OUT2 6144
#define IN 8192

// STEP2 computes the two digests after the bytes w0, w1 leave the window
// and c0, c1 enter it, from the digest in dig: d1 into R13, d2 into out.
// It uses R9–R13 and out; AX holds the tables.
//
//	d1 = d<<8 ^ mod[d>>56] ^ out1[w0] ^ in[c0]
//	d2 = d<<16 ^ modA[d>>56] ^ mod[byte(d>>48)] ^ out2[w0] ^ out1[w1] ^ in[c0]<<8 ^ in[c1]
#define STEP2(w0, w1, c0, c1, dig, out) \
	MOVBQZX w0, R9; \
	MOVBQZX c0, R11; \
	MOVQ IN(AX)(R11*8), R11; \
	MOVQ OUT1(AX)(R9*8), R13; \
	XORQ R11, R13; \
	SHLQ $8, R11; \
	XORQ OUT2(AX)(R9*8), R11; \
	MOVBQZX w1, R10; \
	XORQ OUT1(AX)(R10*8), R11; \
	MOVBQZX c1, R12; \
	XORQ IN(AX)(R12*8), R11; \
	MOVQ dig, R9; \
	SHRQ $56, R9; \
	MOVQ dig, R10; \
	SHRQ $48, R10; \
	MOVBQZX R10, R10; \
	MOVQ dig, out; \
	SHLQ $8, out; \
	XORQ out, R13; \
	XORQ MOD(AX)(R9*8), R13; \
	SHLQ $8, out; \
	XORQ R11, out; \
	MOVQ MODA(AX)(R9*8), R9; \
	XORQ MOD(AX)(R10*8), R9; \
	XORQ R9, out

// func lanes2(t *rabinTables, q []byte, k, l int, d, e, mask uint64) (int, uint64, uint64)
//
// Registers: BX points at the first lane's pair, CX at its end, DI is the
// second lane's distance from the first; DX and R14 are the lanes'
// digests, R15 and SI their next ones; R8 is the mask.
TEXT ·lanes2(SB), NOSPLIT, $0-96
	MOVQ t+0(FP), AX
	MOVQ q_base+8(FP), BX
	MOVQ k+32(FP), CX
	MOVQ l+40(FP), DI
	ADDQ CX, BX
	LEAQ (BX)(DI*1), CX
	MOVQ d+48(FP), DX
	MOVQ e+56(FP), R14
	MOVQ mask+64(FP), R8

loop:
	CMPQ BX, CX
	JAE done
	STEP2(0(BX), 1(BX), 64(BX), 65(BX), DX, R15)
	TESTQ R8, R13
	JZ done
	TESTQ R8, R15
	JZ done
	STEP2(0(BX)(DI*1), 1(BX)(DI*1), 64(BX)(DI*1), 65(BX)(DI*1), R14, SI)
	TESTQ R8, R13
	JZ done
	TESTQ R8, SI
	JZ done
	MOVQ R15, DX
	MOVQ SI, R14
	ADDQ $2, BX
	JMP loop

done:
	SUBQ q_base+8(FP), BX
	MOVQ BX, ret+72(FP)
	MOVQ DX, ret1+80(FP)
	MOVQ R14, ret2+88(FP)
	RET
