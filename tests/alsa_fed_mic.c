/* A capture device for the tests: an ALSA external (ioplug) PCM whose "converter" is a FIFO.
 *
 * It has captured what a feeder has written to the FIFO, as it was written: the test is its
 * clock. Like a sound card it overruns when its reader falls more than a buffer behind (the
 * feeder wrote more than the buffer holds while nobody read): it keeps the newest buffer of
 * audio and reports an xrun, as a card's DMA that went round its buffer does.
 *
 *     pcm_type.fedmic { lib "/path/to/libasound_module_pcm_fedmic.so" }
 *     pcm.mic { type fedmic fifo "/path/to/fifo" format "S16_LE" }   # or FLOAT_LE
 *
 * Mono, 16 kHz, capture only. Built by tests/conftest.py (the fed_mic_plugin fixture).
 */

#include <alsa/asoundlib.h>
#include <alsa/pcm_external.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct fed_mic {
	snd_pcm_ioplug_t io;
	int fifo;
	snd_pcm_format_t format;
	size_t frame_bytes;
	snd_pcm_uframes_t transferred; /* frames moved from the FIFO into ALSA's buffer since prepare */
};

static snd_pcm_uframes_t pending_frames(struct fed_mic *mic)
{
	int bytes = 0;

	if (ioctl(mic->fifo, FIONREAD, &bytes) < 0)
		return 0;
	return bytes / mic->frame_bytes;
}

static int read_frames(struct fed_mic *mic, char *to, snd_pcm_uframes_t frames)
{
	size_t left = frames * mic->frame_bytes;

	while (left > 0) {
		ssize_t got = read(mic->fifo, to, left);
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		to += got;
		left -= got;
	}
	return 0;
}

static int fed_mic_start(snd_pcm_ioplug_t *io)
{
	return 0;
}

static int fed_mic_stop(snd_pcm_ioplug_t *io)
{
	return 0;
}

static int fed_mic_prepare(snd_pcm_ioplug_t *io)
{
	struct fed_mic *mic = io->private_data;

	mic->transferred = 0;
	return 0;
}

/* The hardware position: what was moved into ALSA's buffer and what waits in the FIFO. */
static snd_pcm_sframes_t fed_mic_pointer(snd_pcm_ioplug_t *io)
{
	struct fed_mic *mic = io->private_data;
	snd_pcm_uframes_t pending = pending_frames(mic);
	snd_pcm_uframes_t unread = mic->transferred - io->appl_ptr;

	if (unread + pending > io->buffer_size) {
		/* Overrun: what went round the buffer is lost, the newest buffer of audio stays. */
		char scrap[4096];
		size_t lost = pending > io->buffer_size ? (pending - io->buffer_size) * mic->frame_bytes : 0;
		while (lost > 0) {
			ssize_t got = read(mic->fifo, scrap, lost < sizeof scrap ? lost : sizeof scrap);
			if (got <= 0)
				break;
			lost -= got;
		}
		return -EPIPE;
	}
	return mic->transferred + pending; /* SND_PCM_IOPLUG_FLAG_BOUNDARY_WA: not wrapped at the buffer */
}

/* ALSA's buffer from offset (the reader's position): the frames the FIFO holds for it. */
static snd_pcm_sframes_t fed_mic_transfer(snd_pcm_ioplug_t *io, const snd_pcm_channel_area_t *areas,
					  snd_pcm_uframes_t offset, snd_pcm_uframes_t size)
{
	struct fed_mic *mic = io->private_data;
	snd_pcm_uframes_t end = io->appl_ptr + size;
	char *base = (char *)areas[0].addr + (areas[0].first + offset * areas[0].step) / 8;
	int err;

	if (end > mic->transferred) {
		snd_pcm_uframes_t skip = mic->transferred - io->appl_ptr;
		err = read_frames(mic, base + skip * mic->frame_bytes, end - mic->transferred);
		if (err < 0)
			return err;
		mic->transferred = end;
	}
	return size;
}

static int fed_mic_close(snd_pcm_ioplug_t *io)
{
	struct fed_mic *mic = io->private_data;

	close(mic->fifo);
	free(mic);
	return 0;
}

static const snd_pcm_ioplug_callback_t fed_mic_callback = {
	.start = fed_mic_start,
	.stop = fed_mic_stop,
	.prepare = fed_mic_prepare,
	.pointer = fed_mic_pointer,
	.transfer = fed_mic_transfer,
	.close = fed_mic_close,
};

SND_PCM_PLUGIN_DEFINE_FUNC(fedmic)
{
	snd_config_iterator_t i, next;
	const char *fifo = NULL, *format = "S16_LE";
	struct fed_mic *mic;
	int err;

	snd_config_for_each(i, next, conf) {
		snd_config_t *n = snd_config_iterator_entry(i);
		const char *id;
		if (snd_config_get_id(n, &id) < 0)
			continue;
		if (strcmp(id, "comment") == 0 || strcmp(id, "type") == 0 || strcmp(id, "hint") == 0)
			continue;
		if (strcmp(id, "fifo") == 0 && snd_config_get_string(n, &fifo) == 0)
			continue;
		if (strcmp(id, "format") == 0 && snd_config_get_string(n, &format) == 0)
			continue;
		SNDERR("fedmic: unknown or bad field %s", id);
		return -EINVAL;
	}
	if (fifo == NULL) {
		SNDERR("fedmic: no fifo");
		return -EINVAL;
	}
	if (stream != SND_PCM_STREAM_CAPTURE)
		return -EINVAL;

	mic = calloc(1, sizeof *mic);
	if (mic == NULL)
		return -ENOMEM;
	mic->format = snd_pcm_format_value(format);
	if (mic->format == SND_PCM_FORMAT_UNKNOWN) {
		free(mic);
		return -EINVAL;
	}
	mic->frame_bytes = snd_pcm_format_physical_width(mic->format) / 8;
	mic->fifo = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (mic->fifo < 0) {
		err = -errno;
		free(mic);
		return err;
	}

	mic->io.version = SND_PCM_IOPLUG_VERSION;
	mic->io.name = "edge tests: a microphone fed through a FIFO";
	mic->io.flags = SND_PCM_IOPLUG_FLAG_BOUNDARY_WA;
	mic->io.poll_fd = mic->fifo;
	mic->io.poll_events = POLLIN;
	mic->io.mmap_rw = 0;
	mic->io.callback = &fed_mic_callback;
	mic->io.private_data = mic;
	err = snd_pcm_ioplug_create(&mic->io, name, stream, mode);
	if (err < 0) {
		close(mic->fifo);
		free(mic);
		return err;
	}

	{
		unsigned int access[] = { SND_PCM_ACCESS_MMAP_INTERLEAVED };
		unsigned int formats[] = { mic->format };
		if ((err = snd_pcm_ioplug_set_param_list(&mic->io, SND_PCM_IOPLUG_HW_ACCESS, 1, access)) < 0 ||
		    (err = snd_pcm_ioplug_set_param_list(&mic->io, SND_PCM_IOPLUG_HW_FORMAT, 1, formats)) < 0 ||
		    (err = snd_pcm_ioplug_set_param_minmax(&mic->io, SND_PCM_IOPLUG_HW_CHANNELS, 1, 1)) < 0 ||
		    (err = snd_pcm_ioplug_set_param_minmax(&mic->io, SND_PCM_IOPLUG_HW_RATE, 16000, 16000)) < 0 ||
		    (err = snd_pcm_ioplug_set_param_minmax(&mic->io, SND_PCM_IOPLUG_HW_PERIOD_BYTES, 64, 1 << 20)) < 0 ||
		    (err = snd_pcm_ioplug_set_param_minmax(&mic->io, SND_PCM_IOPLUG_HW_PERIODS, 2, 1024)) < 0 ||
		    (err = snd_pcm_ioplug_set_param_minmax(&mic->io, SND_PCM_IOPLUG_HW_BUFFER_BYTES, 128, 1 << 22)) < 0) {
			snd_pcm_ioplug_delete(&mic->io);
			return err;
		}
	}
	*pcmp = mic->io.pcm;
	return 0;
}

SND_PCM_PLUGIN_SYMBOL(fedmic);
