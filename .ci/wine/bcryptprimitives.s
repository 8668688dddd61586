# bcryptprimitives.dll for Wine 8 (Debian 12's), which lacks it: Go 1.24 and
# later take their random numbers from its ProcessPrng (Windows 10's API) at
# start-up and die without it. This one forwards to RtlGenRandom
# (advapi32!SystemFunction036), which Wine has. Built and used by
# .ci/wine/run-tests only; nothing ships it.
	.text
	.globl	ProcessPrng
ProcessPrng:			# BOOL ProcessPrng(PBYTE buf, SIZE_T len)
	subq	$40, %rsp	# shadow space for the callee, stack 16-aligned
	call	*__imp_SystemFunction036(%rip)	# BOOLEAN RtlGenRandom(buf, (ULONG)len)
	addq	$40, %rsp
	movl	$1, %eax	# ProcessPrng always succeeds
	ret

	.globl	DllMain
DllMain:
	movl	$1, %eax
	ret
