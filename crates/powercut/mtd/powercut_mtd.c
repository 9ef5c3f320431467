// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * powercut_mtd - a RAM-backed MTD device that journals every change.
 *
 * This file is part of fstx (the power-cut test harness) and is
 * dual-licensed under the MIT licence or the GNU General Public
 * License version 2, at your option.
 *
 * Each instance i provides:
 *
 *   MTD "powercut<i>"          flash held in vmalloc'd RAM, erased = 0xFF.
 *                              NAND-like (nor=0) or NOR-like (nor=1).
 *   /dev/powercut_mtd_log<i>   a queue of records, one per program or
 *                              erase in the order they took effect, plus
 *                              MARK records written by userspace.  read()
 *                              removes whole records; 0 means empty.
 *   /dev/powercut_mtd_mem<i>   the raw flash contents (read/write/lseek),
 *                              written without flash semantics or logging.
 *
 * Record format (little-endian, packed, 24-byte header):
 *   u32 kind   1 = PROGRAM, 2 = ERASE, 3 = MARK
 *   u32 len    PROGRAM/MARK: payload bytes; ERASE: bytes erased
 *   u64 offset PROGRAM/ERASE: flash offset; MARK: 0
 *   u64 seq    per-instance counter, starting at 0
 * followed by the payload: PROGRAM: the data handed to the write call
 * (before it is ANDed into the flash); ERASE: none; MARK: the bytes that
 * were written to the log device.
 */

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/list.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/miscdevice.h>
#include <linux/math64.h>
#include <linux/mtd/mtd.h>

#define PCM_MAX_INSTANCES	16
#define PCM_KIND_PROGRAM	1
#define PCM_KIND_ERASE		2
#define PCM_KIND_MARK		3
/* A MARK record must fit into the 1 MiB buffer userspace reads with. */
#define PCM_MAX_MARK		((1u << 20) - sizeof(struct pcm_rec_hdr))
/* Bounce buffer size for the mem device. */
#define PCM_CHUNK		(64u * 1024u)

static unsigned long size = 32ul << 20;
module_param(size, ulong, 0444);
MODULE_PARM_DESC(size, "flash size in bytes per instance (default 32 MiB)");

static unsigned int erasesize = 128u << 10;
module_param(erasesize, uint, 0444);
MODULE_PARM_DESC(erasesize, "erase block size in bytes (default 128 KiB)");

static unsigned int writesize = 2048;
module_param(writesize, uint, 0444);
MODULE_PARM_DESC(writesize, "NAND page size in bytes (default 2048; ignored with nor=1)");

static bool nor;
module_param(nor, bool, 0444);
MODULE_PARM_DESC(nor, "behave as NOR flash (writesize 1) instead of NAND");

static unsigned int count = 4;
module_param(count, uint, 0444);
MODULE_PARM_DESC(count, "number of instances (default 4, at most 16)");

struct pcm_rec_hdr {
	__le32 kind;
	__le32 len;
	__le64 offset;
	__le64 seq;
} __packed;

struct pcm_rec {
	struct list_head link;
	size_t bytes;			/* header + payload */
	u8 data[];			/* struct pcm_rec_hdr, then payload */
};

static struct pcm_rec_hdr *pcm_hdr(struct pcm_rec *r)
{
	return (struct pcm_rec_hdr *)r->data;
}

static u8 *pcm_payload(struct pcm_rec *r)
{
	return r->data + sizeof(struct pcm_rec_hdr);
}

struct pcm_dev {
	struct mtd_info mtd;
	/* Orders flash changes, reads and log appends of this instance. */
	struct mutex lock;
	u8 *mem;
	u64 size;
	u64 seq;
	struct list_head log;
	/* Serialises readers of the log device (taken before 'lock'). */
	struct mutex drain_lock;

	struct miscdevice logdev;
	struct miscdevice memdev;
	char mtd_name[16];
	char log_name[32];
	char mem_name[32];
	bool mtd_added;
	bool logdev_added;
	bool memdev_added;
};

static struct pcm_dev *pcm_devs[PCM_MAX_INSTANCES];
static unsigned int pcm_ndevs;

static struct pcm_dev *mtd_to_pcm(struct mtd_info *mtd)
{
	return container_of(mtd, struct pcm_dev, mtd);
}

/* Allocates a record with room for 'plen' payload bytes. */
static struct pcm_rec *pcm_rec_new(u32 kind, u32 len, u64 offset, size_t plen)
{
	struct pcm_rec *r;

	r = kvmalloc(struct_size(r, data, sizeof(struct pcm_rec_hdr) + plen),
		     GFP_KERNEL);
	if (!r)
		return NULL;
	INIT_LIST_HEAD(&r->link);
	r->bytes = sizeof(struct pcm_rec_hdr) + plen;
	pcm_hdr(r)->kind = cpu_to_le32(kind);
	pcm_hdr(r)->len = cpu_to_le32(len);
	pcm_hdr(r)->offset = cpu_to_le64(offset);
	pcm_hdr(r)->seq = 0;
	return r;
}

/* Caller holds dev->lock. */
static void pcm_rec_append(struct pcm_dev *dev, struct pcm_rec *r)
{
	pcm_hdr(r)->seq = cpu_to_le64(dev->seq);
	dev->seq++;
	list_add_tail(&r->link, &dev->log);
}

static void pcm_free_list(struct list_head *head)
{
	struct pcm_rec *r, *tmp;

	list_for_each_entry_safe(r, tmp, head, link) {
		list_del(&r->link);
		kvfree(r);
	}
}

static bool pcm_in_range(struct pcm_dev *dev, u64 off, u64 len)
{
	return off <= dev->size && len <= dev->size - off;
}

/* ---- MTD operations ---------------------------------------------------- */

static int pcm_erase(struct mtd_info *mtd, struct erase_info *instr)
{
	struct pcm_dev *dev = mtd_to_pcm(mtd);
	struct pcm_rec *r;
	u32 rem;

	instr->fail_addr = MTD_FAIL_ADDR_UNKNOWN;
	div_u64_rem(instr->addr, mtd->erasesize, &rem);
	if (rem)
		return -EINVAL;
	div_u64_rem(instr->len, mtd->erasesize, &rem);
	if (rem)
		return -EINVAL;
	if (!pcm_in_range(dev, instr->addr, instr->len) || instr->len > U32_MAX)
		return -EINVAL;

	r = pcm_rec_new(PCM_KIND_ERASE, (u32)instr->len, instr->addr, 0);
	if (!r)
		return -ENOMEM;

	mutex_lock(&dev->lock);
	memset(dev->mem + instr->addr, 0xff, instr->len);
	pcm_rec_append(dev, r);
	mutex_unlock(&dev->lock);
	return 0;
}

static int pcm_read(struct mtd_info *mtd, loff_t from, size_t len,
		    size_t *retlen, u_char *buf)
{
	struct pcm_dev *dev = mtd_to_pcm(mtd);

	if (from < 0 || !pcm_in_range(dev, from, len))
		return -EINVAL;

	mutex_lock(&dev->lock);
	memcpy(buf, dev->mem + from, len);
	mutex_unlock(&dev->lock);
	*retlen = len;
	return 0;
}

static int pcm_write(struct mtd_info *mtd, loff_t to, size_t len,
		     size_t *retlen, const u_char *buf)
{
	struct pcm_dev *dev = mtd_to_pcm(mtd);
	struct pcm_rec *r;
	u8 *dst;
	size_t i;
	u32 rem;

	if (to < 0 || !pcm_in_range(dev, to, len) || len > U32_MAX)
		return -EINVAL;
	if (mtd->writesize > 1) {
		div_u64_rem(to, mtd->writesize, &rem);
		if (rem)
			return -EINVAL;
		div_u64_rem(len, mtd->writesize, &rem);
		if (rem)
			return -EINVAL;
	}

	r = pcm_rec_new(PCM_KIND_PROGRAM, (u32)len, to, len);
	if (!r)
		return -ENOMEM;
	memcpy(pcm_payload(r), buf, len);

	mutex_lock(&dev->lock);
	dst = dev->mem + to;
	for (i = 0; i < len; i++)
		dst[i] &= buf[i];
	pcm_rec_append(dev, r);
	mutex_unlock(&dev->lock);
	*retlen = len;
	return 0;
}

static void pcm_sync(struct mtd_info *mtd)
{
}

/* ---- log device -------------------------------------------------------- */

static struct pcm_dev *logdev_to_pcm(struct file *file)
{
	struct miscdevice *misc = file->private_data;

	return container_of(misc, struct pcm_dev, logdev);
}

static ssize_t pcm_log_read(struct file *file, char __user *ubuf,
			    size_t len, loff_t *ppos)
{
	struct pcm_dev *dev = logdev_to_pcm(file);
	struct pcm_rec *r, *first;
	LIST_HEAD(taken);
	size_t total = 0;
	ssize_t ret;

	if (mutex_lock_interruptible(&dev->drain_lock))
		return -ERESTARTSYS;

	/* Detach as many whole records as fit, then copy without 'lock'. */
	mutex_lock(&dev->lock);
	if (list_empty(&dev->log)) {
		mutex_unlock(&dev->lock);
		ret = 0;
		goto out;
	}
	first = list_first_entry(&dev->log, struct pcm_rec, link);
	if (first->bytes > len) {
		mutex_unlock(&dev->lock);
		ret = -ENOSPC;
		goto out;
	}
	while (!list_empty(&dev->log)) {
		r = list_first_entry(&dev->log, struct pcm_rec, link);
		if (r->bytes > len - total)
			break;
		total += r->bytes;
		list_move_tail(&r->link, &taken);
	}
	mutex_unlock(&dev->lock);

	total = 0;
	list_for_each_entry(r, &taken, link) {
		if (copy_to_user(ubuf + total, r->data, r->bytes)) {
			/* Put everything back in front, keeping the order. */
			mutex_lock(&dev->lock);
			list_splice(&taken, &dev->log);
			mutex_unlock(&dev->lock);
			ret = -EFAULT;
			goto out;
		}
		total += r->bytes;
	}
	pcm_free_list(&taken);
	ret = total;
out:
	mutex_unlock(&dev->drain_lock);
	return ret;
}

static ssize_t pcm_log_write(struct file *file, const char __user *ubuf,
			     size_t len, loff_t *ppos)
{
	struct pcm_dev *dev = logdev_to_pcm(file);
	struct pcm_rec *r;

	if (len == 0)
		return 0;
	if (len > PCM_MAX_MARK)
		return -EMSGSIZE;

	r = pcm_rec_new(PCM_KIND_MARK, (u32)len, 0, len);
	if (!r)
		return -ENOMEM;
	if (copy_from_user(pcm_payload(r), ubuf, len)) {
		kvfree(r);
		return -EFAULT;
	}

	mutex_lock(&dev->lock);
	pcm_rec_append(dev, r);
	mutex_unlock(&dev->lock);
	return len;
}

static const struct file_operations pcm_log_fops = {
	.owner = THIS_MODULE,
	.read = pcm_log_read,
	.write = pcm_log_write,
	.llseek = noop_llseek,
};

/* ---- mem device -------------------------------------------------------- */

static struct pcm_dev *memdev_to_pcm(struct file *file)
{
	struct miscdevice *misc = file->private_data;

	return container_of(misc, struct pcm_dev, memdev);
}

static ssize_t pcm_mem_read(struct file *file, char __user *ubuf,
			    size_t len, loff_t *ppos)
{
	struct pcm_dev *dev = memdev_to_pcm(file);
	loff_t pos = *ppos;
	size_t done = 0;
	void *bounce;

	if (pos < 0)
		return -EINVAL;
	if (pos >= dev->size || len == 0)
		return 0;
	len = min_t(u64, len, dev->size - pos);

	bounce = kvmalloc(min_t(size_t, len, PCM_CHUNK), GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;

	while (done < len) {
		size_t n = min_t(size_t, len - done, PCM_CHUNK);

		mutex_lock(&dev->lock);
		memcpy(bounce, dev->mem + pos + done, n);
		mutex_unlock(&dev->lock);
		if (copy_to_user(ubuf + done, bounce, n))
			break;
		done += n;
	}
	kvfree(bounce);
	if (!done)
		return -EFAULT;
	*ppos = pos + done;
	return done;
}

static ssize_t pcm_mem_write(struct file *file, const char __user *ubuf,
			     size_t len, loff_t *ppos)
{
	struct pcm_dev *dev = memdev_to_pcm(file);
	loff_t pos = *ppos;
	size_t done = 0;
	void *bounce;

	if (pos < 0)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (pos >= dev->size)
		return -ENOSPC;
	len = min_t(u64, len, dev->size - pos);

	bounce = kvmalloc(min_t(size_t, len, PCM_CHUNK), GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;

	while (done < len) {
		size_t n = min_t(size_t, len - done, PCM_CHUNK);

		if (copy_from_user(bounce, ubuf + done, n))
			break;
		mutex_lock(&dev->lock);
		memcpy(dev->mem + pos + done, bounce, n);
		mutex_unlock(&dev->lock);
		done += n;
	}
	kvfree(bounce);
	if (!done)
		return -EFAULT;
	*ppos = pos + done;
	return done;
}

static loff_t pcm_mem_llseek(struct file *file, loff_t off, int whence)
{
	struct pcm_dev *dev = memdev_to_pcm(file);

	return fixed_size_llseek(file, off, whence, dev->size);
}

static const struct file_operations pcm_mem_fops = {
	.owner = THIS_MODULE,
	.read = pcm_mem_read,
	.write = pcm_mem_write,
	.llseek = pcm_mem_llseek,
};

/* ---- instance setup ---------------------------------------------------- */

static void pcm_destroy(struct pcm_dev *dev)
{
	if (dev->mtd_added)
		WARN_ON(mtd_device_unregister(&dev->mtd));
	if (dev->memdev_added)
		misc_deregister(&dev->memdev);
	if (dev->logdev_added)
		misc_deregister(&dev->logdev);
	pcm_free_list(&dev->log);
	vfree(dev->mem);
	kfree(dev);
}

static struct pcm_dev *pcm_create(unsigned int idx)
{
	struct pcm_dev *dev;
	struct mtd_info *mtd;
	int err;

	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return ERR_PTR(-ENOMEM);
	mutex_init(&dev->lock);
	mutex_init(&dev->drain_lock);
	INIT_LIST_HEAD(&dev->log);
	dev->size = size;

	dev->mem = vmalloc(size);
	if (!dev->mem) {
		kfree(dev);
		return ERR_PTR(-ENOMEM);
	}
	memset(dev->mem, 0xff, size);

	snprintf(dev->mtd_name, sizeof(dev->mtd_name), "powercut%u", idx);
	snprintf(dev->log_name, sizeof(dev->log_name), "powercut_mtd_log%u", idx);
	snprintf(dev->mem_name, sizeof(dev->mem_name), "powercut_mtd_mem%u", idx);

	dev->logdev.minor = MISC_DYNAMIC_MINOR;
	dev->logdev.name = dev->log_name;
	dev->logdev.fops = &pcm_log_fops;
	err = misc_register(&dev->logdev);
	if (err)
		goto fail;
	dev->logdev_added = true;

	dev->memdev.minor = MISC_DYNAMIC_MINOR;
	dev->memdev.name = dev->mem_name;
	dev->memdev.fops = &pcm_mem_fops;
	err = misc_register(&dev->memdev);
	if (err)
		goto fail;
	dev->memdev_added = true;

	mtd = &dev->mtd;
	mtd->name = dev->mtd_name;
	mtd->owner = THIS_MODULE;
	mtd->size = size;
	mtd->erasesize = erasesize;
	if (nor) {
		mtd->type = MTD_NORFLASH;
		mtd->flags = MTD_CAP_NORFLASH;
		mtd->writesize = 1;
	} else {
		mtd->type = MTD_NANDFLASH;
		mtd->flags = MTD_CAP_NANDFLASH;
		mtd->writesize = writesize;
	}
	mtd->writebufsize = mtd->writesize;
	mtd->oobsize = 0;
	mtd->oobavail = 0;
	mtd->_erase = pcm_erase;
	mtd->_read = pcm_read;
	mtd->_write = pcm_write;
	mtd->_sync = pcm_sync;

	err = mtd_device_register(mtd, NULL, 0);
	if (err)
		goto fail;
	dev->mtd_added = true;
	return dev;

fail:
	pcm_destroy(dev);
	return ERR_PTR(err);
}

static int pcm_check_params(void)
{
	unsigned int ws = nor ? 1 : writesize;

	if (count == 0 || count > PCM_MAX_INSTANCES) {
		pr_err("powercut_mtd: count must be 1..%d\n", PCM_MAX_INSTANCES);
		return -EINVAL;
	}
	if (ws == 0 || erasesize == 0 || erasesize % ws) {
		pr_err("powercut_mtd: erasesize must be a non-zero multiple of writesize\n");
		return -EINVAL;
	}
	if (size == 0 || size % erasesize) {
		pr_err("powercut_mtd: size must be a non-zero multiple of erasesize\n");
		return -EINVAL;
	}
	return 0;
}

static void pcm_remove_all(void)
{
	while (pcm_ndevs) {
		pcm_ndevs--;
		pcm_destroy(pcm_devs[pcm_ndevs]);
		pcm_devs[pcm_ndevs] = NULL;
	}
}

static int __init pcm_init(void)
{
	unsigned int i;
	int err;

	err = pcm_check_params();
	if (err)
		return err;

	for (i = 0; i < count; i++) {
		struct pcm_dev *dev = pcm_create(i);

		if (IS_ERR(dev)) {
			pcm_remove_all();
			return PTR_ERR(dev);
		}
		pcm_devs[pcm_ndevs++] = dev;
	}
	pr_info("powercut_mtd: %u x %lu bytes, %s, erasesize %u, writesize %u\n",
		count, size, nor ? "NOR" : "NAND", erasesize, nor ? 1 : writesize);
	return 0;
}

static void __exit pcm_exit(void)
{
	pcm_remove_all();
}

module_init(pcm_init);
module_exit(pcm_exit);

MODULE_LICENSE("Dual MIT/GPL");
MODULE_AUTHOR("fstx project");
MODULE_DESCRIPTION("RAM-backed MTD device that logs every program and erase");
